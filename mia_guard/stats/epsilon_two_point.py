"""The two-point ε lower bound: the threshold test of Jagielski, Ullman & Oprea (2020) and
Nasr et al. (2021) with Clopper-Pearson bounds, applied across the canaries of one run.

It treats canaries as independent trials: a heuristic in one run, exact when each
canary comes from its own training run. The threshold is picked on a calibration half
and the bound computed on the other half.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from .epsilon_one_run import _check_delta
from .estimate import _check_confidence
from .roc import check_scores


def _stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration / evaluation halves with members and non-members split evenly."""
    rng = np.random.default_rng(seed)
    cal, ev = [], []
    for cls in (True, False):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(idx.size)]
        cal.append(idx[: idx.size // 2])
        ev.append(idx[idx.size // 2 :])
    return np.sort(np.concatenate(cal)), np.sort(np.concatenate(ev))


def _two_point_eps(
    tp: np.ndarray, n_pos: int, fp: np.ndarray, n_neg: int, delta: float, tail: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epsilon lower bound per threshold from one-sided Clopper–Pearson bounds.

    ``tail`` is the failure probability of each one-sided bound.
    Returns ``(eps_lb, tpr_lo, fpr_hi)``.
    """
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    # The np.maximum / np.minimum keep beta parameters valid in the branch np.where drops.
    tpr_lo = np.where(tp > 0, stats.beta.ppf(tail, np.maximum(tp, 1), n_pos - tp + 1), 0.0)
    fpr_hi = np.where(
        fp < n_neg, stats.beta.ppf(1.0 - tail, fp + 1, np.maximum(n_neg - fp, 1)), 1.0
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        flag_in = np.log(np.maximum(tpr_lo - delta, 0.0) / fpr_hi)
        flag_out = np.log(np.maximum(1.0 - fpr_hi - delta, 0.0) / (1.0 - tpr_lo))
    eps = np.nan_to_num(np.maximum(flag_in, flag_out), nan=0.0, neginf=0.0)
    return np.maximum(eps, 0.0), tpr_lo, fpr_hi


def two_point_epsilon_lower_bound(
    scores: Any,
    is_member: Any,
    delta: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Epsilon lower bound from one threshold test (Jagielski et al. 2020; Nasr et al. 2021).

    A seeded split (stratified by label) makes a calibration half and an evaluation half.
    On the calibration half, the threshold ``t`` (flag member when ``score >= t``) that
    maximizes the same lower bound computed on calibration counts is chosen — the
    bound, not the raw ratio, so that a threshold flagging zero non-members (infinite
    point estimate) is not preferred. On the evaluation half only:

    * ``FPR_hi``: one-sided Clopper–Pearson upper bound of the false-positive rate,
    * ``TPR_lo``: one-sided Clopper–Pearson lower bound of the true-positive rate,

    each at level ``1 - (1 - confidence) / 2`` so both hold jointly with probability
    ``>= confidence`` (union bound). Then, from (eps, delta)-DP applied to the event
    "flagged" and to its complement,

        eps_lb = max(log((TPR_lo - delta) / FPR_hi), log((1 - FPR_hi - delta) / (1 - TPR_lo)), 0).

    Assumes the evaluation canaries are independent trials of the same test; exact when
    each canary is its own training run, a heuristic across canaries of a single run
    (use :func:`one_run_epsilon_crossfit` for a bound that holds in one run).

    Returns:
        dict with ``epsilon_lb``, ``threshold``, ``tpr_lo``, ``fpr_hi``, ``tp``,
        ``n_members_eval``, ``fp``, ``n_nonmembers_eval``, ``n_calibration``,
        ``confidence``, ``delta``, ``seed``.
    """
    scores, labels = check_scores(scores, is_member)
    delta = _check_delta(delta)
    tail = (1.0 - _check_confidence(confidence)) / 2.0
    if labels.sum() < 2 or (~labels).sum() < 2:
        raise ValueError(
            "the two-point bound needs at least 2 members and 2 non-members (one of each "
            "per half)"
        )
    cal, ev = _stratified_halves(labels, seed)

    cal_scores, cal_labels = scores[cal], labels[cal]
    thresholds = np.unique(cal_scores)[::-1]
    n_pos_cal, n_neg_cal = int(cal_labels.sum()), int((~cal_labels).sum())
    tp_cal = n_pos_cal - np.searchsorted(np.sort(cal_scores[cal_labels]), thresholds)
    fp_cal = n_neg_cal - np.searchsorted(np.sort(cal_scores[~cal_labels]), thresholds)
    eps_cal, _, _ = _two_point_eps(tp_cal, n_pos_cal, fp_cal, n_neg_cal, delta, tail)
    threshold = float(thresholds[int(np.argmax(eps_cal))])

    ev_scores, ev_labels = scores[ev], labels[ev]
    n_pos, n_neg = int(ev_labels.sum()), int((~ev_labels).sum())
    tp = int((ev_scores[ev_labels] >= threshold).sum())
    fp = int((ev_scores[~ev_labels] >= threshold).sum())
    eps, tpr_lo, fpr_hi = _two_point_eps(np.array([tp]), n_pos, np.array([fp]), n_neg, delta, tail)
    return {
        "epsilon_lb": float(eps[0]),
        "threshold": threshold,
        "tpr_lo": float(tpr_lo[0]),
        "fpr_hi": float(fpr_hi[0]),
        "tp": tp,
        "n_members_eval": n_pos,
        "fp": fp,
        "n_nonmembers_eval": n_neg,
        "n_calibration": int(cal.size),
        "confidence": float(confidence),
        "delta": float(delta),
        "seed": int(seed),
    }
