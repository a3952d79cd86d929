"""Tests for mia_guard.stats (epsilon_one_run, epsilon_two_point, exposure): epsilon lower bounds, exposure, planning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from mia_guard.stats import epsilon_one_run as O
from mia_guard.stats import epsilon_two_point as T
from mia_guard.stats import exposure as X
from mia_guard.stats import metrics as M

# ----------------------------------------------------------------- one-run p-value


def _p_value_direct(m, r, v, eps, delta):
    """Theorem 3.1's f(v) written out term by term (independent of the module's loop)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    binom = stats.binom(r, q)
    tail = sum(binom.pmf(w) for w in range(v, r + 1))
    alpha = max(
        (sum(binom.pmf(w) for w in range(max(v - i, 0), v)) / i for i in range(1, m + 1)),
        default=0.0,
    )
    return min(1.0, tail + 2 * m * delta * alpha)


@pytest.mark.parametrize(
    "m, r, v, eps, delta",
    [
        (20, 10, 7, 0.5, 0.0),
        (20, 10, 7, 0.5, 1e-3),
        (40, 30, 30, 2.0, 1e-4),
        (15, 15, 3, 1.0, 1e-2),
    ],
)
def test_p_value_matches_theorem_formula(m, r, v, eps, delta):
    assert O.one_run_p_value(m, r, v, eps, delta) == pytest.approx(
        _p_value_direct(m, r, v, eps, delta), rel=1e-9, abs=1e-15
    )


# ---------------------------------------------------------------- one-run bound


@pytest.mark.parametrize("r", [2, 10, 50, 300])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_closed_form_for_all_correct_guesses(r, confidence):
    eps = O.one_run_epsilon_lower_bound(1000, r, r, delta=0.0, confidence=confidence)
    q = (1 - confidence) ** (1 / r)
    expected = max(0.0, float(special.logit(q)))
    assert eps == pytest.approx(expected, abs=1e-7)
    if expected > 0:
        assert special.expit(eps) ** r == pytest.approx(1 - confidence, rel=1e-6)


def test_bound_is_monotone_in_correct_guesses():
    for delta in (0.0, 1e-5):
        bounds = [O.one_run_epsilon_lower_bound(1000, 200, v, delta) for v in range(0, 201, 5)]
        assert all(b2 >= b1 for b1, b2 in zip(bounds, bounds[1:]))
        assert bounds[-1] > 3.0  # 200 of 200 correct is strong evidence


def test_chance_level_guessing_gives_zero():
    for r in (10, 100, 1000):
        assert O.one_run_epsilon_lower_bound(2000, r, r // 2) == 0.0
        assert O.one_run_epsilon_lower_bound(2000, r, r // 3) == 0.0
    assert O.one_run_epsilon_lower_bound(10, 0, 0) == 0.0


def test_positive_delta_weakens_the_bound():
    for m, r, v in ((1000, 100, 90), (1000, 500, 400), (200, 200, 190)):
        strict = O.one_run_epsilon_lower_bound(m, r, v, delta=0.0)
        loose = O.one_run_epsilon_lower_bound(m, r, v, delta=1e-4)
        assert 0 < loose < strict


def test_bound_rejects_at_returned_epsilon_only():
    m, r, v, delta = 500, 120, 100, 1e-5
    eps = O.one_run_epsilon_lower_bound(m, r, v, delta, 0.95)
    assert O.one_run_p_value(m, r, v, eps, delta) <= 0.05
    assert O.one_run_p_value(m, r, v, eps + 1e-6, delta) > 0.05


def test_soundness_against_exact_randomized_response():
    # An eps-DP randomized response makes each guess correct with prob e^eps/(1+e^eps);
    # the 95% bound may exceed the true eps in at most ~5% of runs.
    true_eps, r, trials = 1.0, 200, 4000
    rng = np.random.default_rng(2024)
    correct = rng.binomial(r, special.expit(true_eps), size=trials)
    bound_of = {v: O.one_run_epsilon_lower_bound(1000, r, int(v)) for v in np.unique(correct)}
    exceed = np.mean([bound_of[v] > true_eps for v in correct])
    assert exceed <= 0.05 + 0.01
    assert np.mean([bound_of[v] for v in correct]) > 0.3  # and it is not vacuous


def _randomized_response_scores(rng, m, eps):
    """Fair-coin membership and binary 'says member' scores from eps-DP randomized response."""
    labels = rng.random(m) < 0.5
    truthful = rng.random(m) < special.expit(eps)
    says_member = np.where(truthful, labels, ~labels)
    return says_member.astype(float), labels


def test_from_scores_soundness_with_randomized_response():
    true_eps, m, trials = 1.0, 400, 400
    rng = np.random.default_rng(5)
    bounds = []
    for trial in range(trials):
        scores, labels = _randomized_response_scores(rng, m, true_eps)
        out = O.one_run_epsilon_from_scores(scores, labels, 100, 100, seed=trial)
        bounds.append(out["epsilon_lb"])
    bounds = np.array(bounds)
    assert np.mean(bounds > true_eps) <= 0.05 + 0.03
    assert bounds.mean() > 0.2


def test_from_scores_counts_guesses():
    scores = np.array([9.0, 8.0, 7.0, 1.0, 0.0, -1.0])
    labels = np.array([True, True, False, False, True, False])
    out = O.one_run_epsilon_from_scores(scores, labels, k_plus=2, k_minus=2)
    # member guesses on 9, 8 (both right); non-member guesses on 0, -1 (one right)
    assert (out["m"], out["r"], out["v"]) == (6, 4, 3)
    assert out["epsilon_lb"] == O.one_run_epsilon_lower_bound(6, 4, 3)
    with pytest.raises(ValueError, match="k_plus"):
        O.one_run_epsilon_from_scores(scores, labels, 4, 3)


def test_ties_are_not_broken_by_canary_order():
    # Members listed first and every score tied: breaking ties by index would make
    # every guess right. A seeded coin keeps the guesses at chance.
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    out = O.one_run_epsilon_from_scores(np.zeros(200), labels, 50, 50)
    assert out["epsilon_lb"] == 0.0
    assert out["v"] < 70


def test_choose_guess_counts_scales_to_eval_fold():
    rng = np.random.default_rng(1)
    labels = rng.random(400) < 0.5
    scores = labels * 3.0 + rng.normal(size=400)
    k_plus, k_minus = O.choose_guess_counts(scores, labels, candidates=[(0.1, 0.1), (0.25, 0.0)])
    k_plus2, k_minus2 = O.choose_guess_counts(
        scores, labels, candidates=[(0.1, 0.1), (0.25, 0.0)], n_eval=200
    )
    assert (k_plus, k_minus) in {(40, 40), (100, 0)}
    assert (k_plus2, k_minus2) == (k_plus // 2, k_minus // 2)
    with pytest.raises(ValueError, match="candidates"):
        O.choose_guess_counts(scores, labels, candidates=[(0.7, 0.6)])


def test_crossfit_split_ignores_labels_and_finds_leakage():
    rng = np.random.default_rng(3)
    labels = rng.random(600) < 0.5
    leaky = labels * 4.0 + rng.normal(size=600)
    out = O.one_run_epsilon_crossfit(leaky, labels, seed=0)
    assert out["n_calibration"] + out["n_evaluation"] == 600
    assert out["m"] == out["n_evaluation"]
    assert out["epsilon_lb"] > 2.0
    # The split is a function of the seed only: flipping labels keeps the same halves,
    # so the evaluation half has the same size and the same guess counts are feasible.
    flipped = O.one_run_epsilon_crossfit(leaky, ~labels, seed=0)
    assert flipped["n_evaluation"] == out["n_evaluation"]
    assert flipped["epsilon_lb"] == 0.0  # scores now point the wrong way
    noise = O.one_run_epsilon_crossfit(rng.normal(size=600), labels, seed=0)
    assert noise["epsilon_lb"] < 0.5


def test_crossfit_soundness_with_randomized_response():
    true_eps, trials = 1.0, 300
    rng = np.random.default_rng(9)
    exceed = 0
    for trial in range(trials):
        scores, labels = _randomized_response_scores(rng, 400, true_eps)
        exceed += O.one_run_epsilon_crossfit(scores, labels, seed=trial)["epsilon_lb"] > true_eps
    assert exceed / trials <= 0.05 + 0.03


# ---------------------------------------------------------------- two-point bound


def test_two_point_bound_is_sound_for_randomized_response():
    true_eps, trials = 1.0, 200
    rng = np.random.default_rng(17)
    bounds = []
    for trial in range(trials):
        scores, labels = _randomized_response_scores(rng, 1000, true_eps)
        bounds.append(T.two_point_epsilon_lower_bound(scores, labels, seed=trial)["epsilon_lb"])
    bounds = np.array(bounds)
    assert np.mean(bounds > true_eps) <= 0.05 + 0.02
    assert bounds.mean() > 0.4


def test_two_point_bound_uses_only_the_evaluation_half():
    rng = np.random.default_rng(4)
    labels = rng.random(300) < 0.5
    scores = labels * 2.0 + rng.normal(size=300)
    out = T.two_point_epsilon_lower_bound(scores, labels, delta=1e-5, seed=2)
    assert out["n_members_eval"] + out["n_nonmembers_eval"] + out["n_calibration"] == 300
    tail = 0.025  # each one-sided bound at 1 - (1 - 0.95) / 2
    fpr_hi = stats.beta.ppf(1 - tail, out["fp"] + 1, out["n_nonmembers_eval"] - out["fp"])
    assert out["fpr_hi"] == pytest.approx(fpr_hi)
    expected = max(
        math.log((out["tpr_lo"] - 1e-5) / out["fpr_hi"]),
        math.log((1 - out["fpr_hi"] - 1e-5) / (1 - out["tpr_lo"])),
        0.0,
    )
    assert out["epsilon_lb"] == pytest.approx(expected)
    assert out["epsilon_lb"] > 1.0


def test_two_point_bound_is_zero_without_signal():
    rng = np.random.default_rng(8)
    labels = rng.random(400) < 0.5
    out = T.two_point_epsilon_lower_bound(rng.normal(size=400), labels)
    assert out["epsilon_lb"] < 0.3


# ------------------------------------------------------------------------ exposure


def test_exposure_equals_log_space_minus_log_rank():
    reference = np.arange(1.0, 9.0)  # 8 non-inserted canaries with NLL 1..8
    size = 1024
    result = X.exposure([2.5, 3.0, 8.0, 20.0], reference, size)
    # NLL 2.5 beats 6 of 8: rank ~ 1024 * 2/8 = 256 -> exposure 10 - 8 = 2 bits.
    # NLL 3.0 ties the third: ties count against it, rank ~ 1024 * 3/8.
    expected = [
        math.log2(size) - math.log2(size * 2 / 8),
        math.log2(size) - math.log2(size * 3 / 8),
        0.0,
        0.0,
    ]
    np.testing.assert_allclose(result.exposures, expected)
    assert result.method == "sampling" and not result.extrapolated.any()
    assert result.cap == 10.0 and result.max == pytest.approx(2.0)


def test_exposure_from_exact_ranks():
    result = X.exposure_from_ranks([1, 2, 1024], 1024)
    np.testing.assert_allclose(result.exposures, [10.0, 9.0, 0.0])
    with pytest.raises(ValueError, match="ranks"):
        X.exposure_from_ranks([0], 1024)


def test_extrapolation_for_canaries_below_every_reference():
    rng = np.random.default_rng(0)
    reference = rng.normal(50.0, 5.0, size=500)
    low = reference.min()
    result = X.exposure([low - 1.0, low - 15.0, low - 1e4, 50.0], reference, 2.0**40)
    near, far, absurd, typical = result.exposures
    assert list(result.extrapolated) == [True, True, True, False]
    assert result.method == "sampling+skewnorm"
    assert near >= math.log2(500)  # it beat all 500 samples
    assert far > near + 3  # far beyond the sample gets much more
    assert absurd == result.cap == 40.0
    assert typical < 2.0


def test_exposure_result_json_round_trip():
    result = X.exposure([1.0, 5.0], [2.0, 3.0, 4.0, 6.0], 64)
    back = X.ExposureResult.from_dict(json.loads(json.dumps(result.to_dict())))
    np.testing.assert_array_equal(back.exposures, result.exposures)
    np.testing.assert_array_equal(back.extrapolated, result.extrapolated)
    assert (back.cap, back.method, back.n_reference) == (result.cap, result.method, 4)


def test_exposure_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        X.exposure([1.0], [2.0, float("nan")], 64)
    with pytest.raises(ValueError, match="at least 2"):
        X.exposure([1.0], [2.0], 64)
    with pytest.raises(ValueError, match="secret_space_size"):
        X.exposure([1.0], [2.0, 3.0], 1)


# ------------------------------------------------------------------------ planning


@pytest.mark.parametrize("delta", [0.0, 1e-5])
@pytest.mark.parametrize("epsilon", [0.5, 2.0, 4.0])
def test_canaries_needed_is_the_smallest_sufficient_audit(epsilon, delta):
    plan = O.canaries_needed_for_epsilon(epsilon, 0.95, delta, guess_fraction=0.1)
    r, m = plan["guesses"], plan["canaries"]
    assert m == math.ceil(r / 0.1 - 1e-9)
    assert O.one_run_epsilon_lower_bound(m, r, r, delta, 0.95) >= epsilon
    m_less = math.ceil((r - 1) / 0.1 - 1e-9)
    assert O.one_run_epsilon_lower_bound(m_less, r - 1, r - 1, delta, 0.95) < epsilon


def test_planning_closed_form_and_resolution_helpers():
    plan = O.canaries_needed_for_epsilon(2.0, 0.95)
    assert plan["guesses"] == math.ceil(math.log(0.05) / math.log(special.expit(2.0)))
    assert plan["canaries"] == plan["guesses"]
    assert M.nonmembers_needed(0.001) == 1000
    assert M.min_resolvable_fpr(1000) == 0.001
    with pytest.raises(ValueError, match="epsilon"):
        O.canaries_needed_for_epsilon(0.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="v \\(correct guesses\\)"):
        O.one_run_epsilon_lower_bound(10, 5, 6)
    with pytest.raises(ValueError, match="delta"):
        O.one_run_epsilon_lower_bound(10, 5, 5, delta=1.5)
    with pytest.raises(ValueError, match="confidence"):
        O.one_run_epsilon_lower_bound(10, 5, 5, confidence=1.0)
    with pytest.raises(ValueError, match="2 members"):
        T.two_point_epsilon_lower_bound([0.1, 0.2, 0.3], [True, False, False])
