"""Reference-calibrated sequence LiRA: the conditional-Gaussian formula, power where it should have it, no leakage."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from mia_guard import TokenStats
from mia_guard.attacks import AttackContext, get
from mia_guard.attacks.reference_calibrated import (
    condition,
    fit_conditional_gaussians,
    joint_covariance,
    reference_calibrated_scores,
)
from mia_guard.stats.metrics import tpr_at_fpr
from mia_guard.stats.roc import roc_auc


def fine_tune_like(n=1000, width=12, seed=0, gap=0.6):
    """Per-token statistics of a fine-tuned model and its base: the base explains most of a token's value,
    tokens share a canary-level change, members gain more on later tokens."""
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.5
    reference = rng.normal(0.0, 2.0, (n, width)) + rng.normal(0.0, 1.0, (n, 1))
    shared = rng.normal(0.0, 0.7, (n, 1))
    change = 0.4 - 0.15 * reference + shared + rng.normal(0.0, 0.5, (n, width))
    change += is_member[:, None] * np.linspace(0.1, 1.0, width) * gap
    return reference + change, reference, is_member


def test_conditional_density_matches_the_joint_minus_the_marginal():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(np.zeros(6), np.eye(6) + 0.5, size=400)
    joint = joint_covariance(x - x.mean(axis=0))
    slope, cov = condition(joint, 3)
    change, reference = x[:5, :3], x[:5, 3:]
    mean = x.mean(axis=0)
    conditional_mean = mean[:3] + (reference - mean[3:]) @ slope.T
    ours = [multivariate_normal(m, cov).logpdf(c) for m, c in zip(conditional_mean, change)]
    independent = multivariate_normal(mean, joint).logpdf(x[:5]) - multivariate_normal(mean[3:], joint[3:, 3:]).logpdf(
        reference)
    np.testing.assert_allclose(ours, independent, rtol=1e-8)


def test_fitted_gaussian_logpdf_is_scipys():
    values, reference, is_member = fine_tune_like(n=300, width=5)
    fits = fit_conditional_gaussians(values - reference, reference, is_member, np.arange(300), pooled=False)
    fit = fits[False]
    expected = [
        multivariate_normal(fit.mean + fit.slope @ (r - fit.ref_mean), fit.cov).logpdf(c)
        for c, r in zip(values[:4] - reference[:4], reference[:4])
    ]
    np.testing.assert_allclose(fit.logpdf(values[:4] - reference[:4], reference[:4]), expected, rtol=1e-8)


def test_class_means_are_adjusted_to_the_common_reference_mean_as_in_ancova():
    """A chance difference between the classes' reference means is no member gap: the fitted
    means are the intercepts of one least-squares fit of the change on class indicators and
    the centred reference (a second computation; many canaries, so shrinkage is negligible)."""
    rng = np.random.default_rng(7)
    n = 20_000
    is_member = rng.random(n) < 0.5
    reference = rng.normal(0.0, 1.5, (n, 3)) + 0.3 * is_member[:, None]  # imbalanced on purpose
    slope = np.array([[-0.6, 0.1, 0.0], [0.0, -0.5, 0.2], [0.1, 0.0, -0.7]])
    change = 0.2 + 0.5 * is_member[:, None] + reference @ slope.T + rng.normal(0.0, 0.4, (n, 3))
    fits = fit_conditional_gaussians(change, reference, is_member, np.arange(n), shrink_gap=False)
    design = np.column_stack([is_member, ~is_member, reference - reference.mean(axis=0)]).astype(float)
    coef, *_ = np.linalg.lstsq(design, change, rcond=None)
    np.testing.assert_allclose(fits[True].mean, coef[0], atol=2e-3)
    np.testing.assert_allclose(fits[False].mean, coef[1], atol=2e-3)
    np.testing.assert_allclose(fits[True].mean - fits[False].mean, 0.5, atol=0.03)  # the true gap
    np.testing.assert_allclose(fits[True].slope, slope, atol=0.02)


def test_beats_the_loss_and_the_reference_difference_on_fine_tune_like_statistics():
    values, reference, is_member = fine_tune_like()
    mask = np.ones_like(values, dtype=bool)
    refcal = reference_calibrated_scores(values, reference, mask, is_member)
    baselines = {"loss": values.mean(axis=1), "reference": (values - reference).mean(axis=1)}
    ours = tpr_at_fpr(refcal, is_member, 0.01).value
    for name, scores in baselines.items():
        assert ours > 1.5 * tpr_at_fpr(scores, is_member, 0.01).value, name
    assert roc_auc(refcal, is_member) > roc_auc(baselines["reference"], is_member)


def test_random_labels_give_chance_and_variable_lengths_fall_back_with_a_warning():
    values, reference, _ = fine_tune_like(n=600)
    mask = np.ones_like(values, dtype=bool)
    chance = [roc_auc(reference_calibrated_scores(values, reference, mask, labels), labels)
              for labels in (np.random.default_rng(100 + s).random(600) < 0.5 for s in range(5))]
    assert abs(np.mean(chance) - 0.5) < 0.04  # cross-fitted: no canary's own label leaks into its score
    mask[::2, 9:] = False
    labels = np.arange(600) % 2 == 0
    with pytest.warns(UserWarning, match="positions do not line up"):
        scores = reference_calibrated_scores(values, reference, mask, labels)
    assert np.isfinite(scores).all()


def _stats(values: np.ndarray) -> TokenStats:
    v = torch.tensor(values, dtype=torch.float32)
    p = torch.sigmoid(v)
    return TokenStats(nll=-torch.log(p), confidence=v, entropy=torch.ones_like(v), logp_std=torch.ones_like(v),
                      top1=torch.zeros_like(v), mask=torch.ones_like(v, dtype=torch.bool))


def test_registered_attack_needs_a_reference_and_reads_the_confidence():
    values, reference, is_member = fine_tune_like(n=400)
    attack = get("seq_lira_refcal")
    assert attack.supervised and "reference" in attack.needs
    ctx = AttackContext(stats=_stats(values), reference=_stats(reference), is_member=is_member)
    direct = reference_calibrated_scores(values.astype(np.float32), reference.astype(np.float32),
                                         np.ones_like(values, dtype=bool), is_member)
    np.testing.assert_allclose(attack(ctx), direct, rtol=1e-6)
    assert roc_auc(get("seq_lira_refcal_separate")(ctx), is_member) > 0.6
    with pytest.raises(ValueError, match="needs a reference model's statistics"):
        attack(AttackContext(stats=_stats(values), is_member=is_member))


def test_the_step_0_audit_is_skipped_with_a_reason():
    values, _, is_member = fine_tune_like(n=100)
    ctx = AttackContext(stats=_stats(values), reference=_stats(values), is_member=is_member)
    with pytest.raises(ValueError, match="the audited model is the reference"):
        get("seq_lira_refcal")(ctx)
