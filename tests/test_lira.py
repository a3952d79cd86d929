"""Univariate LiRA (single run, cross-fitted; and from several runs) on synthetic statistics."""

import numpy as np
import pytest
from lira_synthetic import random_split, token_stats
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from mia_guard import attacks
from mia_guard.attacks import AttackContext
from mia_guard.attacks.lira import canary_statistic, fit_class_gaussians, score_with_gaussians, statistic_matrix
from mia_guard.attacks.multirun import multi_run_lira


def auc(ctx, is_member, name, **params):
    return roc_auc_score(is_member, attacks.get(name)(ctx, **params))


def shifted(seed: int, n: int, shift: float, member_scale: float = 1.0, length: int = 4):
    """Canary statistic ~ N(0, 1) for non-members and N(shift, member_scale²) for members,
    spread evenly over ``length`` identical tokens (so the mean statistic is exactly it)."""
    rng = np.random.default_rng(seed)
    is_member = random_split(rng, n)
    value = rng.standard_normal(n) * np.where(is_member, member_scale, 1.0) + shift * is_member
    stats = token_stats(np.repeat(value[:, None], length, axis=1))
    return AttackContext(stats, is_member=is_member, seed=seed), is_member


def test_statistic_matrix_orientation_reference_difference_and_padding():
    audited = token_stats(np.array([[2.0, -1.0, 5.0], [0.5, 0.0, 0.0]]), lengths=np.array([3, 1]))
    reference = token_stats(np.array([[1.0, -1.0, 2.0], [1.5, 0.0, 0.0]]), lengths=np.array([3, 1]))
    values, mask = statistic_matrix(audited)
    np.testing.assert_allclose(values, [[2.0, -1.0, 5.0], [0.5, 0.0, 0.0]], rtol=1e-6)
    nll, _ = statistic_matrix(audited, "nll")
    np.testing.assert_allclose(nll[mask], -audited.nll.numpy()[mask], rtol=1e-6)  # higher = better predicted
    assert nll[1, 1] == 0.0 and nll[1, 2] == 0.0
    calibrated, _ = statistic_matrix(audited, reference=reference)
    np.testing.assert_allclose(calibrated, [[1.0, 0.0, 3.0], [-1.0, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(canary_statistic(audited, reference=reference), [4.0 / 3.0, -1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        statistic_matrix(audited, "entropy")
    with pytest.raises(ValueError, match="same canary positions"):
        statistic_matrix(audited, reference=token_stats(np.zeros((2, 3))))


def test_online_and_offline_reach_the_gaussian_optimum():
    ctx, is_member = shifted(0, 2000, shift=0.8)
    optimum = norm.cdf(0.8 / np.sqrt(2.0))
    assert auc(ctx, is_member, "lira_online") == pytest.approx(optimum, abs=0.03)
    assert auc(ctx, is_member, "lira_offline") == pytest.approx(optimum, abs=0.03)
    assert auc(ctx, is_member, "lira_online", statistic="nll") == pytest.approx(optimum, abs=0.03)
    z = attacks.get("lira_offline")(ctx)
    neg_log_sf = attacks.get("lira_offline")(ctx, output="neg_log_sf")
    np.testing.assert_allclose(neg_log_sf, -norm.logsf(z), rtol=1e-8)


def test_online_uses_the_member_variance_that_offline_cannot_see():
    ctx, is_member = shifted(1, 2000, shift=0.0, member_scale=2.5)
    assert auc(ctx, is_member, "lira_online") > 0.65
    assert auc(ctx, is_member, "lira_offline") == pytest.approx(0.5, abs=0.04)


def test_random_labels_give_chance_auc_while_an_in_sample_fit_would_not():
    """Cross-fitted LiRA sits at AUC 0.5 under random labels; fitting on the scored
    canaries themselves is clearly optimistic, so this test would catch a leak."""
    cross_fitted = {"lira_online": [], "lira_offline": []}
    in_sample = []
    for seed in range(80):
        ctx, is_member = shifted(100 + seed, 60, shift=0.0)
        for name in cross_fitted:
            cross_fitted[name].append(auc(ctx, is_member, name))
        values = canary_statistic(ctx.stats)
        fits = fit_class_gaussians(values, is_member, np.arange(60))
        in_sample.append(roc_auc_score(is_member, score_with_gaussians(fits, values)))
    # Held-out scoring is slightly pessimistic under the null (a held-out canary is missing
    # from its own class's fit), never optimistic; a leak shows up as optimism.
    for name, values in cross_fitted.items():
        assert 0.45 < np.mean(values) < 0.53, (name, np.mean(values))
    assert np.mean(in_sample) > 0.55


def test_reference_calibration_removes_canary_difficulty():
    rng = np.random.default_rng(2)
    is_member = random_split(rng, 400)
    difficulty = 3.0 * rng.standard_normal((400, 1))
    reference = token_stats(np.repeat(difficulty + 0.3 * rng.standard_normal((400, 1)), 4, axis=1))
    gained = difficulty + 0.3 * rng.standard_normal((400, 1)) + 0.4 * is_member[:, None]
    audited = token_stats(np.repeat(gained, 4, axis=1))
    ctx = AttackContext(audited, reference=reference, is_member=is_member)
    assert auc(ctx, is_member, "lira_online_ref") >= auc(ctx, is_member, "lira_online") + 0.2
    assert "reference" in attacks.get("lira_online_ref").needs


def test_constant_and_tiny_inputs_give_finite_scores_and_a_warning():
    is_member = np.arange(40) < 20
    constant = AttackContext(token_stats(np.ones((40, 3))), is_member=is_member)
    for name in ("lira_online", "lira_offline"):
        with pytest.warns(UserWarning, match="unit variance"):
            assert np.isfinite(attacks.get(name)(constant)).all()
    tiny_stats = token_stats(np.array([[0.1], [0.7], [-0.3], [0.2]]))
    tiny = AttackContext(tiny_stats, is_member=np.array([1, 0, 1, 0], bool), n_folds=2)
    with pytest.warns(UserWarning, match="unit variance"):
        assert np.isfinite(attacks.get("lira_online")(tiny)).all()


# ---------------------------------------------------------------------- several runs
def _runs(seed: int, num_runs: int = 32, n: int = 200):
    """Runs over the same canaries with their own offsets; half the canaries are noisy."""
    rng = np.random.default_rng(seed)
    offsets = 1.5 * rng.standard_normal((n, 1))
    scale = np.where(np.arange(n) % 2 == 0, 2.0, 0.3)[:, None]

    def run():
        is_member = random_split(rng, n)
        value = offsets + scale * rng.standard_normal((n, 1)) + 0.5 * is_member[:, None]
        return token_stats(np.repeat(value, 4, axis=1)), is_member

    return [run() for _ in range(num_runs)], run()


def test_multi_run_beats_single_run_and_per_example_variance_helps_heteroscedastic_canaries():
    references, (target, is_member) = _runs(0)
    single = auc(AttackContext(target, is_member=is_member), is_member, "lira_online")
    global_variance = roc_auc_score(is_member, multi_run_lira(references, target))
    per_example = roc_auc_score(is_member, multi_run_lira(references, target, variance="per_example"))
    offline = roc_auc_score(is_member, multi_run_lira(references, target, online=False))
    assert global_variance >= single + 0.1 and offline >= single + 0.1
    assert per_example >= global_variance + 0.03


def test_multi_run_validates_its_inputs():
    references, (target, is_member) = _runs(1, num_runs=2, n=20)
    with pytest.raises(ValueError, match="variance"):
        multi_run_lira(references, target, variance="local")
    with pytest.raises(ValueError, match="is_member has shape"):
        multi_run_lira([(references[0][0], is_member[:10])], target)
    with pytest.raises(ValueError, match="at least one reference run"):
        multi_run_lira([], target)
    never_member = [(stats, np.zeros(20, bool) | (np.arange(20) >= 10)) for stats, _ in references]
    with pytest.warns(UserWarning, match="members in none"):
        assert np.isfinite(multi_run_lira(never_member, target)).all()
