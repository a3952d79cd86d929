"""Tests for mia_guard.stats (estimate, roc, metrics): agreement with scikit-learn, exact intervals, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from mia_guard.stats import estimate as E
from mia_guard.stats import metrics as M
from mia_guard.stats import roc as R
from mia_guard.stats.score_intervals import auc_score_interval


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of varied size, class balance and amount of ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[-1] = True, False  # both classes present
    kind = seed % 4
    if kind == 0:
        scores = rng.normal(size=n) + labels
    elif kind == 1:  # integer scores, few levels: heavy ties
        scores = rng.integers(0, int(rng.integers(1, 4)) + 1, size=n)
    elif kind == 2:  # rounded floats: moderate ties
        scores = np.round(rng.normal(size=n) + 0.5 * labels, 1)
    else:  # every score tied
        scores = np.full(n, 3.0)
    return scores, labels


# ------------------------------------------------------------------ ROC and AUC


@pytest.mark.parametrize("seed", range(60))
def test_roc_curve_and_auc_follow_their_definitions(seed):
    """Each threshold t (the distinct scores, descending, after "flag nothing"): FPR and TPR are
    the shares of non-members and members scoring >= t; AUC = P(member > non-member) + P(tie) / 2
    over all pairs."""
    scores, labels = _random_case(seed)
    fpr, tpr, thr = R.roc_curve(scores, labels)
    expected_thr = np.r_[np.inf, np.unique(scores)[::-1]]
    np.testing.assert_array_equal(thr, expected_thr)
    flagged = scores[None, :] >= expected_thr[:, None]
    np.testing.assert_allclose(fpr, flagged[:, ~labels].mean(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, flagged[:, labels].mean(axis=1), rtol=0, atol=1e-12)
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    assert R.roc_auc(scores, labels) == pytest.approx(((pos > neg) + 0.5 * (pos == neg)).mean(), abs=1e-12)


def test_integer_labels_accepted_like_bool():
    scores, labels = _random_case(5)
    assert R.roc_auc(scores, labels.astype(int)) == R.roc_auc(scores, labels)
    assert R.roc_auc(scores, labels.astype(float)) == R.roc_auc(scores, labels)


def test_infinite_scores_are_ranked():
    # -inf is what the Attack wrapper substitutes for NaN; +inf may come from a ratio.
    scores = np.array([np.inf, np.inf, 2.0, 1.0, -np.inf, -np.inf, 0.5])
    labels = np.array([1, 0, 1, 0, 1, 0, 0], dtype=bool)
    finite = np.where(np.isposinf(scores), 10.0, np.where(np.isneginf(scores), -10.0, scores))
    fpr, tpr, thr = R.roc_curve(scores, labels)
    fpr_ref, tpr_ref, _ = skm.roc_curve(labels, finite, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_ref)
    np.testing.assert_allclose(tpr, tpr_ref)
    assert thr[1] == np.inf and thr[-1] == -np.inf  # tied infinities form one point each
    assert R.roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, finite))


# ------------------------------------------------------------------------- DeLong


def _delong_direct(scores, labels):
    """O(n^2) structural components straight from the definition."""
    pos, neg = scores[labels], scores[~labels]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("seed", range(40))
def test_delong_components_match_direct_computation(seed):
    scores, labels = _random_case(seed)
    auc, v10, v01 = R.delong_components(scores, labels)
    auc_ref, v10_ref, v01_ref = _delong_direct(scores, labels)
    assert auc == pytest.approx(auc_ref, abs=1e-12)
    np.testing.assert_allclose(v10, v10_ref, atol=1e-12)
    np.testing.assert_allclose(v01, v01_ref, atol=1e-12)

    est = R.auc_with_ci(scores, labels, confidence=0.9)
    var = 0.0
    if v10_ref.size > 1:
        var += np.var(v10_ref, ddof=1) / v10_ref.size
    if v01_ref.size > 1:
        var += np.var(v01_ref, ddof=1) / v01_ref.size
    half = stats.norm.ppf(0.95) * math.sqrt(var)
    score_low, score_high = auc_score_interval(auc_ref, v10_ref.size, v01_ref.size, 0.9)
    assert est.value == pytest.approx(auc_ref, abs=1e-12)
    # the hull of the DeLong interval and the score interval (never narrower than DeLong)
    assert est.low == pytest.approx(max(0.0, min(auc_ref - half, score_low)), abs=1e-12)
    assert est.high == pytest.approx(min(1.0, max(auc_ref + half, score_high)), abs=1e-12)


def test_delong_interval_covers_true_auc():
    shift = 1.0
    true_auc = stats.norm.cdf(shift / math.sqrt(2))
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    trials, covered = 200, 0
    rng = np.random.default_rng(123)
    for _ in range(trials):
        est = R.auc_with_ci(rng.normal(size=200) + shift * labels, labels)
        covered += est.low <= true_auc <= est.high
    assert covered / trials >= 0.90


def test_perfect_separation_keeps_a_score_interval_with_note():
    """DeLong's variance is 0 here; 2 + 2 canaries cannot show an AUC above 0.39 at 95%."""
    est = R.auc_with_ci([3, 4, 1, 2], [True, True, False, False])
    assert (est.value, est.high) == (1.0, 1.0)
    assert est.low == pytest.approx(auc_score_interval(1.0, 2, 2)[0]) and 0.3 < est.low < 0.5
    assert "score interval" in est.note


# ------------------------------------------------------------------ Clopper–Pearson


@pytest.mark.parametrize("n", [1, 2, 7, 30, 200])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_clopper_pearson_meets_its_definition(n, confidence):
    """Clopper & Pearson (1934): ``P(X >= k | low) = P(X <= k | high) = (1 - confidence) / 2``
    (``low = 0`` at ``k = 0``, ``high = 1`` at ``k = n``), checked with the binomial tails."""
    tail = (1 - confidence) / 2
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        low, high = E.clopper_pearson(k, n, confidence)
        if k == 0:
            assert low == 0.0
        else:
            assert stats.binom.sf(k - 1, n, low) == pytest.approx(tail, rel=1e-8)
        if k == n:
            assert high == 1.0
        else:
            assert stats.binom.cdf(k, n, high) == pytest.approx(tail, rel=1e-8)


# ----------------------------------------------------------------------- TPR @ FPR


def _brute_force_tpr_at_fpr(scores, labels, fpr):
    """Best TPR over thresholds 'score >= t' whose FPR is <= fpr (plus 'flag none')."""
    pos, neg = scores[labels], scores[~labels]
    best = 0.0
    for t in np.unique(scores):
        if np.mean(neg >= t) <= fpr:
            best = max(best, np.mean(pos >= t))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_tpr_at_fpr_is_best_feasible_threshold(seed):
    scores, labels = _random_case(seed)
    n_neg = int((~labels).sum())
    for fpr in (0.05, 0.1, 0.25, 0.5, 1.0):
        est = M.tpr_at_fpr(scores, labels, fpr)
        if n_neg * fpr < 1:
            assert not est.resolvable
            continue
        assert est.value == pytest.approx(_brute_force_tpr_at_fpr(scores, labels, fpr))
        flagged = round(est.value * labels.sum())
        low, high = E.clopper_pearson(flagged, int(labels.sum()), 0.95)
        assert (est.low, est.high) == pytest.approx((low, high))


def test_ties_never_push_fpr_above_target():
    # 10 non-members, two of them tied with most members at 5. At FPR 10% the tied
    # group cannot be flagged (it would give 20%), so only the member at 6 is.
    neg = [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]
    pos = [6, 5, 5, 5, 0]
    scores = np.array(neg + pos, dtype=float)
    labels = np.array([False] * len(neg) + [True] * len(pos))
    assert M.tpr_at_fpr(scores, labels, 0.1).value == pytest.approx(1 / 5)
    assert M.tpr_at_fpr(scores, labels, 0.2).value == pytest.approx(4 / 5)
    # All scores tied: any threshold flags 100% of non-members; below FPR 1 flag none.
    tied = np.zeros(20)
    tied_labels = np.arange(20) < 10
    assert M.tpr_at_fpr(tied, tied_labels, 0.5).value == 0.0
    assert M.tpr_at_fpr(tied, tied_labels, 1.0).value == 1.0


def test_unresolvable_fpr_gives_nan_and_note():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(128, bool), np.zeros(128, bool)]
    scores = rng.normal(size=256) + labels
    est = M.tpr_at_fpr(scores, labels, 0.001)
    assert not est.resolvable
    assert math.isnan(est.value) and math.isnan(est.low) and math.isnan(est.high)
    assert "1000 non-members" in est.note and "have 128" in est.note
    assert str(est).startswith("n/a")
    assert M.tpr_at_fpr(scores, labels, 1 / 128).resolvable  # exactly one allowed FP


def test_resolution_helpers_agree_with_tpr_at_fpr():
    assert M.nonmembers_needed(0.001) == 1000
    assert M.nonmembers_needed(0.01) == 100
    assert M.nonmembers_needed(0.3) == 4
    assert M.min_resolvable_fpr(1000) == 0.001
    for fpr in (0.001, 0.01, 0.07, 0.3):
        n = M.nonmembers_needed(fpr)
        labels = np.r_[np.ones(5, bool), np.zeros(n, bool)]
        scores = np.arange(labels.size, dtype=float)
        assert M.tpr_at_fpr(scores, labels, fpr).resolvable
        assert not M.tpr_at_fpr(scores[:-1], labels[:-1], fpr).resolvable  # one non-member fewer


# ----------------------------------------------------------------------- advantage


@pytest.mark.parametrize("seed", range(10))
def test_advantage_point_estimate_is_max_youden(seed):
    scores, labels = _random_case(seed)
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    est = M.advantage(scores, labels, n_bootstrap=50, seed=seed)
    assert est.value == pytest.approx(max(0.0, float(np.max(tpr - fpr))))
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0


def test_advantage_bootstrap_matches_naive_resampling():
    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(60, bool), np.zeros(90, bool)]
    scores = np.round(rng.normal(size=150) + 0.8 * labels, 1)
    fast = M._bootstrap_advantage(scores, labels, 4000, np.random.default_rng(1))
    pos, neg = scores[labels], scores[~labels]
    naive = []
    for _ in range(1500):
        p = rng.choice(pos, pos.size)
        q = rng.choice(neg, neg.size)
        fpr, tpr, _ = skm.roc_curve(np.r_[np.ones(p.size), np.zeros(q.size)], np.r_[p, q])
        naive.append(max(0.0, np.max(tpr - fpr)))
    for level in (0.025, 0.5, 0.975):
        assert np.quantile(fast, level) == pytest.approx(np.quantile(naive, level), abs=0.03)


def test_advantage_is_seeded():
    scores, labels = _random_case(0)
    assert M.advantage(scores, labels, seed=3) == M.advantage(scores, labels, seed=3)


def test_advantage_interval_covers_true_value():
    shift = 1.0
    true_adv = 2 * stats.norm.cdf(shift / 2) - 1
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    rng = np.random.default_rng(11)
    trials, covered = 100, 0
    for trial in range(trials):
        scores = rng.normal(size=200) + shift * labels
        est = M.advantage(scores, labels, n_bootstrap=300, seed=trial)
        covered += est.low <= true_adv <= est.high
    assert covered / trials >= 0.85


# --------------------------------------------------------------------------- means


def test_mean_with_ci_is_student_t():
    values = np.array([2.0, 3.5, 1.0, 4.0, 2.5])
    est = E.mean_with_ci(values, confidence=0.9)
    sem = math.sqrt(sum((v - values.mean()) ** 2 for v in values) / 4) / math.sqrt(5)
    assert est.value == pytest.approx(values.mean())
    # the ends are where the t statistic with 4 degrees of freedom leaves 5% in each tail
    assert stats.t.sf((est.high - est.value) / sem, df=4) == pytest.approx(0.05, rel=1e-9)
    assert stats.t.cdf((est.low - est.value) / sem, df=4) == pytest.approx(0.05, rel=1e-9)
    one = E.mean_with_ci([1.5])
    assert one.value == 1.5 and math.isnan(one.low) and one.note
    same = E.mean_with_ci([2.0, 2.0, 2.0])
    assert (same.value, same.low, same.high) == (2.0, 2.0, 2.0) and "equal" in same.note
    with pytest.raises(ValueError, match="NaN/inf"):
        E.mean_with_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        E.mean_with_ci([])


# ------------------------------------------------------------------ summaries / IO


def test_all_tied_scores_give_auc_half_and_warning():
    labels = np.arange(50) % 2 == 0
    result = M.summarize_attack("loss", np.full(50, -2.0), labels)
    assert result.auc.value == 0.5
    assert any("tied" in w for w in result.warnings)


def test_summarize_attack_and_json_round_trip():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.5
    scores = rng.normal(size=300) + labels
    result = M.summarize_attack("loss", scores, labels, fprs=(0.001, 0.01, 0.1), seed=1)
    assert set(result.tpr_at_fpr) == {0.001, 0.01, 0.1}
    assert not result.tpr_at_fpr[0.001].resolvable
    assert any("not resolvable" in w for w in result.warnings)
    assert result.n_members + result.n_nonmembers == 300
    assert result.auc.value == pytest.approx(skm.roc_auc_score(labels, scores))

    text = json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: NaN stored as null
    back = M.AttackMetrics.from_dict(json.loads(text))
    assert set(back.tpr_at_fpr) == {0.001, 0.01, 0.1}
    assert back.auc == result.auc and back.advantage == result.advantage
    assert back.tpr_at_fpr[0.01] == result.tpr_at_fpr[0.01]
    assert math.isnan(back.tpr_at_fpr[0.001].value)
    assert back.tpr_at_fpr[0.001].note == result.tpr_at_fpr[0.001].note
    assert back.warnings == result.warnings


def test_estimate_str_and_round_trip():
    est = E.Estimate(0.8123, 0.7701, 0.8512, 0.95)
    assert str(est) == "0.812 [0.770, 0.851]"
    assert est.resolvable
    assert E.Estimate.from_dict(est.to_dict()) == est
    with pytest.raises(ValueError, match="not an Estimate"):
        E.Estimate.from_dict({"value": 1.0})


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.2, 0.3], [True, False], "same shape"),
        ([[0.1, 0.2]], [[True, False]], "1-D"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "bool or 0/1"),
        ([0.1, 0.2], ["yes", "no"], "bool or 0/1"),
        (["a", "b"], [True, False], "real numbers"),
        ([0.1, float("nan"), float("nan"), 0.3], [1, 0, 1, 0], "2 NaN value"),
        ([0.1, 0.2], [False, False], "no members"),
        ([0.1, 0.2], [True, True], "no non-members"),
        ([], [], "no canaries"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, message):
    for fn in (R.roc_curve, R.roc_auc, R.auc_with_ci, M.advantage):
        with pytest.raises(ValueError, match=message):
            fn(scores, labels)
    with pytest.raises(ValueError, match=message):
        M.summarize_attack("a", scores, labels)


def test_nan_error_suggests_the_fix():
    with pytest.raises(ValueError, match="-inf"):
        R.roc_auc([0.1, float("nan"), 0.3], [1, 0, 1])


def test_bad_parameters_raise():
    scores, labels = [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]
    with pytest.raises(ValueError, match="confidence"):
        R.auc_with_ci(scores, labels, confidence=95)
    with pytest.raises(ValueError, match="target FPR"):
        M.tpr_at_fpr(scores, labels, 0.0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        M.advantage(scores, labels, n_bootstrap=0)
