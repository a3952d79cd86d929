"""Score intervals (Wilson, Newcombe's difference and AUC intervals) and the metrics that use them:
checked against published values and independent formulas, and honest with few canaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mia_guard.stats import metrics as M
from mia_guard.stats import roc as R
from mia_guard.stats.score_intervals import (
    auc_score_interval,
    auc_score_variance,
    difference_interval,
    wilson_interval,
)

Z95 = stats.norm.ppf(0.975)


@pytest.mark.parametrize("n", [1, 2, 5, 40, 1000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(n, confidence):
    for k in sorted({0, 1, n // 2, n - 1, n}):
        ref = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
        assert wilson_interval(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize(
    "counts, published",
    [  # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0000)),
    ],
)
def test_difference_interval_matches_newcombe_1998(counts, published):
    assert difference_interval(*counts) == pytest.approx(published, abs=5e-5)


@pytest.mark.parametrize("m, n", [(1, 1), (3, 7), (64, 64), (200, 50)])
def test_auc_score_variance_is_hanley_mcneil_at_the_mean_class_size(m, n):
    theta = np.linspace(0.01, 0.99, 25)
    n_star = (m + n) / 2
    q1, q2 = theta / (2 - theta), 2 * theta**2 / (1 + theta)  # Hanley & McNeil (1982), exponential model
    hanley_mcneil = (theta * (1 - theta) + (n_star - 1) * (q1 - theta**2) + (n_star - 1) * (q2 - theta**2)) / (m * n)
    np.testing.assert_allclose(auc_score_variance(theta, m, n), hanley_mcneil, rtol=1e-12)
    # at 1/2 it is the exact null variance of the Mann-Whitney statistic
    assert auc_score_variance(0.5, m, n) == pytest.approx((m + n + 1) / (12 * m * n), rel=1e-12)


def test_auc_score_interval_of_one_canary_per_class_is_wilsons():
    """m = n = 1 makes V(θ) = θ(1 − θ): the Wilson interval of one trial."""
    assert auc_score_interval(1.0, 1, 1) == pytest.approx((1 / (1 + Z95**2), 1.0), abs=1e-9)
    assert auc_score_interval(0.0, 1, 1) == pytest.approx(wilson_interval(0, 1), abs=1e-9)


@pytest.mark.parametrize("m, n", [(1, 1), (1, 4), (3, 3), (25, 25), (500, 300)])
def test_auc_score_interval_ends_solve_the_score_equation(m, n):
    for auc in sorted({0.0, 1 / (m * n), 0.5, 1 - 1 / (m * n), 1.0}):
        low, high = auc_score_interval(auc, m, n)
        assert low <= auc <= high and high - low > 0.0
        for end in (low, high):
            if 0.0 < end < 1.0:
                assert abs(auc - end) == pytest.approx(Z95 * math.sqrt(auc_score_variance(end, m, n)), abs=1e-9)


def test_auc_interval_never_collapses_and_covers_at_small_n():
    """DeLong alone: zero width with 1 + 1 canaries or perfect separation; the hull covers."""
    assert R.auc_with_ci([1.0, 0.0], [True, False]).low < 0.25
    rng = np.random.default_rng(7)
    for per_class, shift in ((5, 1.0), (10, 2.0), (25, 1.0)):
        true_auc = stats.norm.cdf(shift / math.sqrt(2))
        labels = np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)]
        trials, above = 300, 0
        covered = 0
        for _ in range(trials):
            est = R.auc_with_ci(rng.normal(size=2 * per_class) + shift * labels, labels)
            covered += est.low <= true_auc <= est.high
            above += true_auc > est.high  # the side on which a gate would release wrongly
        assert covered / trials >= 0.92, (per_class, shift, covered / trials)
        assert above / trials <= 0.04, (per_class, shift, above / trials)


def test_crossfit_interval_never_collapses():
    scores = np.r_[np.full(10, 5.0), np.zeros(10)]
    labels = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    folds = np.tile(np.arange(5), 4)
    est = R.crossfit_auc_with_ci(scores, labels, folds)
    assert est.value == 1.0 and est.low == pytest.approx(auc_score_interval(1.0, 10, 10)[0]) and est.low < 0.9


def test_advantage_interval_never_collapses():
    one_each = M.advantage([1.0, 0.0], [True, False])
    assert (one_each.value, one_each.low, one_each.high) == (1.0, 0.0, 1.0)
    separated = M.advantage(np.r_[np.arange(20) + 100.0, np.arange(20)], np.r_[np.ones(20, bool), np.zeros(20, bool)])
    assert separated.value == 1.0 and separated.high == 1.0
    assert separated.low == pytest.approx(difference_interval(20, 20, 0, 20)[0]) and separated.low < 0.9


def test_advantage_upper_end_covers_leaky_models_with_few_canaries():
    """The bootstrap alone put the true advantage above its upper end in up to ~3% of
    trials on leaky models with few canaries; the hull keeps it rare (a wrong release)."""
    rng = np.random.default_rng(11)
    for per_class, shift in ((5, 3.0), (10, 1.0)):
        true = 2 * stats.norm.cdf(shift / 2) - 1
        labels = np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)]
        above = sum(
            true > M.advantage(rng.normal(size=2 * per_class) + shift * labels, labels, n_bootstrap=200, seed=t).high
            for t in range(200)
        )
        assert above / 200 <= 0.03


def test_two_canaries_give_no_zero_width_interval():
    metrics = M.summarize_attack("loss", [2.0, 1.0], [True, False], fprs=(1.0,))
    for est in (metrics.auc, metrics.advantage, metrics.tpr_at_fpr[1.0]):
        assert est.high - est.low >= 0.5, est
