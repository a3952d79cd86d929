"""Sequence LiRA, its covariance estimators and the multi-run combination, on synthetic
per-token statistics with known structure (AR(1)-correlated tokens, per-canary offsets)."""

import warnings

import numpy as np
import pytest
from lira_synthetic import ar1_noise, random_split, token_stats
from scipy.stats import multivariate_normal
from sklearn.metrics import roc_auc_score

from mia_guard import attacks
from mia_guard.attacks import AttackContext
from mia_guard.attacks.covariance import fit_covariance, pooled_residuals, robust_cholesky
from mia_guard.attacks.multirun import multi_run_sequence_lira
from mia_guard.attacks.sequence_lira import (
    fit_sequence_gaussians,
    gls_shift,
    mvn_logpdf,
    score_sequence,
    shrink_to_mean,
)

LENGTH = 12
RHO = 0.8


def late_gain_data(seed: int, n: int = 800, gain: float = 0.7, lengths: bool = False):
    """AR(1) tokens; members gain ``gain`` on the tokens from position 4 (6) on, as a
    memorized secret becomes predictable once its first tokens are given."""
    rng = np.random.default_rng(seed)
    is_member = random_split(rng, n)
    start = 4 if lengths else LENGTH // 2
    values = ar1_noise(rng, n, LENGTH, RHO) + gain * is_member[:, None] * (np.arange(LENGTH) >= start)
    canary_lengths = rng.integers(6, LENGTH + 1, n) if lengths else None
    return AttackContext(token_stats(values, canary_lengths), is_member=is_member, seed=seed), is_member


def auc(ctx, is_member, name, **params):
    return roc_auc_score(is_member, attacks.get(name)(ctx, **params))


# ---------------------------------------------------------------------- covariance estimators
def ledoit_wolf_by_the_paper(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit & Wolf (2004), Lemma 3.2-3.4 with centered rows: ``S = X'X / n``, ``m = tr(S) / p``,
    ``d² = ||S - m I||² / p``, ``b̄² = Σ_k ||x_k x_k' - S||² / (n² p)``; the estimate is
    ``(1 - δ) S + δ m I`` with ``δ = min(b̄², d²) / d²`` (Frobenius norms; δ = 0 when
    ``S`` is already the target, ``d² = 0``)."""
    n, p = x.shape
    sample = x.T @ x / n
    m = np.trace(sample) / p
    d2 = np.sum((sample - m * np.eye(p)) ** 2) / p
    b2_bar = sum(np.sum((np.outer(row, row) - sample) ** 2) for row in x) / (n**2 * p)
    shrinkage = min(b2_bar, d2) / d2 if d2 > 0 else 0.0
    return (1 - shrinkage) * sample + shrinkage * m * np.eye(p), shrinkage


@pytest.mark.parametrize("n, p", [(40, 10), (8, 30), (200, 1)])
def test_ledoit_wolf_covariance_follows_the_paper(n, p):
    rng = np.random.default_rng(n * p)
    residuals = rng.standard_normal((n, p)) @ rng.standard_normal((p, p))
    fitted = fit_covariance(residuals, np.ones((n, p), bool), "ledoit_wolf")
    expected, shrinkage = ledoit_wolf_by_the_paper(residuals)
    np.testing.assert_allclose(fitted.matrix(p), expected, rtol=1e-10, atol=1e-12)
    assert fitted.shrinkage == pytest.approx(shrinkage, abs=1e-12)


def test_ar1_model_recovers_rho_from_variable_length_canaries():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, LENGTH + 1, 3000)
    mask = np.arange(LENGTH)[None, :] < lengths[:, None]
    values = np.where(mask, 2.0 * ar1_noise(rng, 3000, LENGTH, RHO), 0.0)
    cov = fit_covariance(*pooled_residuals(values, mask, np.zeros(3000)), "ar1")
    assert cov.ar1_rho == pytest.approx(RHO, abs=0.02)
    np.testing.assert_allclose(cov.std, 2.0, rtol=0.08)
    # a canary longer than any fitted one still gets a covariance, consistent with shorter ones
    long = cov.matrix(LENGTH + 8)
    np.testing.assert_allclose(long[:LENGTH, :LENGTH], cov.matrix(LENGTH))
    assert np.all(np.linalg.eigvalsh(long) > 0)


def test_toeplitz_model_is_positive_semidefinite_at_every_length():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 9, 50)
    mask = np.arange(8)[None, :] < lengths[:, None]
    residuals = np.where(mask, rng.standard_normal((50, 8)) * rng.uniform(0.1, 3.0, 8), 0.0)
    cov = fit_covariance(residuals, mask, "toeplitz")
    for length in (1, 5, 8, 40):
        eigenvalues = np.linalg.eigvalsh(cov.matrix(length))
        assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
    np.testing.assert_allclose(cov.matrix(40)[:8, :8], cov.matrix(8))


def test_pooled_residuals_are_unbiased_for_the_variance():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(2000), 2)  # pairs: centering on a mean of 2 halves the raw spread
    values = rng.standard_normal((4000, 3)) * 1.5 + groups[:, None] % 7
    residuals, mask = pooled_residuals(values, np.ones_like(values, dtype=bool), groups)
    assert mask.all()
    np.testing.assert_allclose(np.mean(residuals**2, axis=0), 1.5**2, rtol=0.06)


def test_gaussian_pieces_match_scipy_and_gls_shift_is_standard_normal_for_non_members():
    rng = np.random.default_rng(3)
    sample = ar1_noise(rng, 4000, 6, 0.6)
    cov = fit_covariance(*pooled_residuals(sample, np.ones((4000, 6), bool), np.zeros(4000)), "ledoit_wolf")
    residuals = rng.multivariate_normal(np.zeros(6), cov.matrix(6), size=4000)
    lengths = np.full(4000, 6)
    np.testing.assert_allclose(
        mvn_logpdf(residuals[:5], lengths[:5], cov),
        multivariate_normal(np.zeros(6), cov.matrix(6)).logpdf(residuals[:5]),
    )
    shift = gls_shift(residuals, lengths, cov)
    assert abs(shift.mean()) < 0.05 and shift.std() == pytest.approx(1.0, abs=0.05)
    # a common upward shift d moves every score by d * sqrt(1' Σ⁻¹ 1) > 0 (the member side)
    expected = 0.5 * np.sqrt(np.sum(np.linalg.inv(cov.matrix(6))))
    np.testing.assert_allclose(gls_shift(residuals + 0.5, lengths, cov) - shift, expected)


def test_shrink_to_mean_collapses_equal_values_and_keeps_distinct_ones():
    rng = np.random.default_rng(7)
    noise_var = np.full(12, 0.01)
    equal = 0.3 + 0.1 * rng.standard_normal(12)  # all true values 0.3, seen with noise
    np.testing.assert_allclose(shrink_to_mean(equal, noise_var), equal.mean(), atol=0.03)
    distinct = np.r_[np.zeros(6), np.ones(6)] + 0.1 * rng.standard_normal(12)
    shrunk = shrink_to_mean(distinct, noise_var)
    assert np.all(np.abs(shrunk - distinct) < 0.05)  # moved by ~4% of a 0.5 deviation
    unobserved = shrink_to_mean(distinct, noise_var, observed=np.arange(12) != 0)
    assert unobserved[0] == pytest.approx(distinct[1:].mean())


def test_gap_shrinkage_removes_the_estimation_cost_of_a_uniform_weak_gain():
    """Members gain a little on every token: without shrinkage the fitted per-position
    gaps are mostly noise and the score loses to the loss; with it, it matches the loss."""
    shrunk, raw, loss = [], [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        is_member = random_split(rng, 200)
        values = rng.standard_normal((200, LENGTH)) + 0.25 * is_member[:, None]
        ctx = AttackContext(token_stats(values), is_member=is_member)
        shrunk.append(auc(ctx, is_member, "seq_lira", pooled=True))
        raw.append(auc(ctx, is_member, "seq_lira", pooled=True, shrink_gap=False))
        loss.append(auc(ctx, is_member, "loss"))
    assert np.mean(shrunk) >= np.mean(raw) + 0.01
    assert np.mean(shrunk) >= np.mean(loss) - 0.015


# ---------------------------------------------------------------------- the attack
def test_full_covariance_beats_independence_and_the_loss_on_correlated_tokens():
    results = {name: [] for name in ("seq_lira", "seq_lira_diag", "loss")}
    for seed in range(3):
        ctx, is_member = late_gain_data(seed)
        for name in results:
            results[name].append(auc(ctx, is_member, name))
    mean = {name: np.mean(values) for name, values in results.items()}
    assert mean["seq_lira"] >= mean["seq_lira_diag"] + 0.04, mean
    assert mean["seq_lira_diag"] >= mean["loss"] + 0.04, mean
    # the other correlated estimators gain too
    ctx, is_member = late_gain_data(0)
    for options in ({"covariance": "ar1"}, {"covariance": "toeplitz"}, {"pooled": True}):
        assert auc(ctx, is_member, "seq_lira", **options) >= results["seq_lira_diag"][0] + 0.04, options


def test_variable_length_canaries_switch_to_ar1_and_keep_the_gain():
    ctx, is_member = late_gain_data(0, lengths=True)
    with pytest.warns(UserWarning, match="different numbers of scored tokens"):
        full = auc(ctx, is_member, "seq_lira")
    diagonal = auc(ctx, is_member, "seq_lira_diag")
    assert full >= diagonal + 0.04 and diagonal > auc(ctx, is_member, "loss")


def test_random_labels_give_chance_auc_while_an_in_sample_fit_would_not():
    """Cross-fitted attacks sit at AUC 0.5 under random labels; a fit that had seen the
    scored canaries' labels is far above it, so this test would catch a leak."""
    names = ("seq_lira", "seq_lira_diag", "seq_lira_offline")
    cross_fitted = {name: [] for name in names}
    in_sample = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        values = ar1_noise(rng, 60, LENGTH, RHO) + 0.5 * rng.standard_normal((60, 1))
        is_member = random_split(rng, 60)
        ctx = AttackContext(token_stats(values), is_member=is_member, seed=seed)
        for name in names:
            cross_fitted[name].append(auc(ctx, is_member, name))
        mask = np.ones_like(values, dtype=bool)
        fits = fit_sequence_gaussians(values, mask, is_member, np.arange(60))
        in_sample.append(roc_auc_score(is_member, score_sequence(fits, values, mask)))
    for name, values in cross_fitted.items():
        assert abs(np.mean(values) - 0.5) < 0.05, (name, np.mean(values))
    assert np.mean(in_sample) > 0.75


def test_offline_score_points_to_members_for_both_statistics():
    rng = np.random.default_rng(4)
    is_member = random_split(rng, 400)
    values = ar1_noise(rng, 400, LENGTH, RHO) + 0.8 * is_member[:, None]
    ctx = AttackContext(token_stats(values), is_member=is_member)
    for statistic in ("confidence", "nll"):
        assert auc(ctx, is_member, "seq_lira_offline", statistic=statistic) > 0.7
        assert auc(ctx, is_member, "seq_lira", statistic=statistic) > 0.7


def test_reference_calibration_removes_canary_difficulty():
    rng = np.random.default_rng(5)
    is_member = random_split(rng, 400)
    difficulty = 3.0 * rng.standard_normal((400, LENGTH))  # how predictable each token is, for any model
    reference = token_stats(difficulty + 0.3 * ar1_noise(rng, 400, LENGTH, RHO))
    audited = token_stats(difficulty + 0.3 * ar1_noise(rng, 400, LENGTH, RHO) + 0.4 * is_member[:, None])
    ctx = AttackContext(audited, reference=reference, is_member=is_member)
    assert auc(ctx, is_member, "seq_lira_ref") >= auc(ctx, is_member, "seq_lira") + 0.2
    shorter = token_stats(np.zeros((400, LENGTH)), lengths=np.full(400, LENGTH - 1))
    with pytest.raises(ValueError, match="same canary positions"):
        attacks.get("seq_lira_ref")(AttackContext(audited, reference=shorter, is_member=is_member))


def test_singular_constant_and_tiny_inputs_give_finite_scores_and_warnings():
    rng = np.random.default_rng(6)
    is_member = random_split(rng, 60)
    base = ar1_noise(rng, 60, 6, RHO)
    duplicated = np.concatenate([base, base], axis=1)  # rank-deficient sample covariance
    for name in ("seq_lira", "seq_lira_offline", "seq_lira_diag"):
        scores = attacks.get(name)(AttackContext(token_stats(duplicated), is_member=is_member))
        assert np.isfinite(scores).all()

    constant = AttackContext(token_stats(np.full((60, 6), 1.5)), is_member=is_member)
    with pytest.warns(UserWarning, match="no within-class variation"):
        assert np.isfinite(attacks.get("seq_lira")(constant)).all()

    few = AttackContext(token_stats(base[:10]), is_member=np.arange(10) < 5, n_folds=2)
    with pytest.warns(UserWarning, match="per training fold"):
        assert np.isfinite(attacks.get("seq_lira")(few)).all()

    wide = rng.standard_normal((24, 40))  # more positions than canaries
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = attacks.get("seq_lira")(AttackContext(token_stats(wide), is_member=np.arange(24) < 12, n_folds=3))
    assert np.isfinite(scores).all()

    singular = np.ones((5, 5))
    factor = robust_cholesky(singular)
    assert np.isfinite(factor).all() and np.allclose(factor @ factor.T, singular, atol=1e-3)


def test_unknown_options_are_rejected_with_the_choices():
    ctx, _ = late_gain_data(0, n=80)
    with pytest.raises(ValueError, match="ledoit_wolf"):
        attacks.get("seq_lira")(ctx, covariance="sample")
    with pytest.raises(ValueError, match="confidence"):
        attacks.get("seq_lira")(ctx, statistic="entropy")


# ---------------------------------------------------------------------- several runs
def _runs(seed: int, num_runs: int, gap_spread: float, n: int = 200, length: int = 8):
    """Runs over the same canaries, each with its own split. Canaries have fixed
    per-token offsets (some secrets are easier), members gain ``0.4 + gap_spread * noise``."""
    rng = np.random.default_rng(seed)
    offsets = 1.5 * rng.standard_normal((n, 1)) + rng.standard_normal((n, length))
    gap = 0.4 + gap_spread * rng.standard_normal((n, length))

    def run():
        is_member = random_split(rng, n)
        values = offsets + 0.5 * ar1_noise(rng, n, length, 0.5) + gap * is_member[:, None]
        return token_stats(values), is_member

    return [run() for _ in range(num_runs)], run()


def test_multi_run_beats_single_run_when_canaries_have_their_own_offsets():
    references, (target, is_member) = _runs(0, 16, gap_spread=0.0)
    single = auc(AttackContext(target, is_member=is_member), is_member, "seq_lira")
    multi = roc_auc_score(is_member, multi_run_sequence_lira(references, target))
    classic = roc_auc_score(is_member, multi_run_sequence_lira(references, target, shrink_gap=False))
    offline = roc_auc_score(is_member, multi_run_sequence_lira(references, target, online=False))
    assert multi >= single + 0.15 and offline >= single + 0.15
    assert multi >= classic + 0.03  # a gap shared by all canaries: shrinking removes its estimation noise


def test_gap_shrinkage_keeps_canary_specific_gaps():
    references, (target, is_member) = _runs(1, 16, gap_spread=0.4)
    shrunk = roc_auc_score(is_member, multi_run_sequence_lira(references, target))
    classic = roc_auc_score(is_member, multi_run_sequence_lira(references, target, shrink_gap=False))
    assert shrunk >= classic - 0.02 and shrunk > 0.9


def test_multi_run_warns_about_canaries_never_inserted_and_rejects_the_target_run():
    references, (target, _) = _runs(2, 3, gap_spread=0.0, n=40)
    references = [(stats, labels & (np.arange(40) != 0)) for stats, labels in references]
    with pytest.warns(UserWarning, match="members in none of the 3 reference runs"):
        scores = multi_run_sequence_lira(references, target, covariance="ar1")
    assert np.isfinite(scores).all()
    with pytest.raises(ValueError, match="target run"):
        multi_run_sequence_lira([*references, (target, references[0][1])], target)
