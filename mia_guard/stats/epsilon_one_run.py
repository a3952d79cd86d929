"""ε lower bounds from one training run (Steinke, Nasr & Jagielski 2023, "Privacy Auditing
with One (1) Training Run", NeurIPS 2023, arXiv:2305.08846), and audit planning.

Inputs follow the package conventions: ``scores`` float ``[N]`` (higher = more likely a
member), ``is_member`` bool ``[N]`` (``True`` = inserted into training). The bound is
sound for any mechanism **if every canary was included by an independent fair coin**
(``CanarySet(..., split="coin")``); an exact half/half split is not covered by the
theorem. Guess counts are picked on a calibration half and the bound is computed on the
other half (:func:`one_run_epsilon_crossfit`). :func:`canaries_needed_for_epsilon` plans
an audit.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
from scipy import optimize, special, stats

from .estimate import _check_confidence
from .roc import check_scores

# Root-finding tolerance on epsilon.
_EPS_TOL = 1e-10

# Default grid for choosing guess counts: fractions of the canaries guessed "member"
# (highest scores) and "non-member" (lowest scores).
_DEFAULT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    return delta


def _check_counts(m: int, r: int, v: int) -> tuple[int, int, int]:
    m, r, v = int(m), int(r), int(v)
    if not 0 <= v <= r <= m:
        raise ValueError(
            f"need 0 <= v (correct guesses) <= r (guesses) <= m (canaries), got "
            f"m={m}, r={r}, v={v}"
        )
    return m, r, v


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Upper bound on ``P[>= v of r guesses correct]`` for an ``(epsilon, delta)``-DP run.

    This is ``f(v)`` of Theorem 3.1 of Steinke, Nasr & Jagielski (2023): with
    ``W ~ Binomial(r, q)``, ``q = e^eps / (1 + e^eps)`` (the accuracy of eps-DP
    randomized response),

        f(v) = P[W >= v] + 2 m delta * max_{i = 1..v} (1/i) P[v - i <= W < v],

    evaluated exactly as in the paper's Appendix D procedure (the max over ``i`` stops
    at ``v`` because the probability stops growing there). Clipped to ``[0, 1]``.

    Args:
        m: canaries, each included by an independent fair coin.
        r: guesses made (abstentions excluded); ``v``: correct guesses.
    """
    m, r, v = _check_counts(m, r, v)
    delta = _check_delta(delta)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    q = float(special.expit(epsilon))
    if v == 0:
        return 1.0
    tail = float(special.bdtrc(v - 1, r, q))  # P[W >= v] = P[W > v - 1]
    if delta == 0.0:
        return min(tail, 1.0)
    # window[i-1] = P[v - i <= W <= v - 1] for i = 1..v
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_epsilon_lower_bound(
    m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95
) -> float:
    """Largest epsilon that the one-run audit rejects: ``v`` of ``r`` guesses correct.

    Steinke, Nasr & Jagielski (2023), Theorem 3.1 with the search of their Appendix D:
    the mechanism is not ``(eps, delta)``-DP at the given confidence when
    :func:`one_run_p_value` ``(m, r, v, eps, delta) <= 1 - confidence``. The p-value grows
    with ``eps``; the bracket is doubled from 1 and the crossing found by Brent's method
    (to ~1e-10, on the rejected side so the returned value is itself rejected).
    Returns 0.0 when not even ``eps = 0`` is rejected (e.g. chance-level guessing).

    Closed form for ``v = r`` and ``delta = 0``: ``q^r = 1 - confidence`` with
    ``q = e^eps / (1 + e^eps)``.

    Soundness needs independent fair-coin inclusion of all ``m`` canaries and a number
    of guesses ``r`` fixed before looking at the labels.
    """
    m, r, v = _check_counts(m, r, v)
    delta = _check_delta(delta)
    alpha = 1.0 - _check_confidence(confidence)
    if one_run_p_value(m, r, v, 0.0, delta) > alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    # Terminates: past eps ~ 37, q rounds to 1.0 and the p-value to 1.
    while one_run_p_value(m, r, v, hi, delta) <= alpha:
        lo, hi = hi, 2.0 * hi
    eps = optimize.brentq(
        lambda e: one_run_p_value(m, r, v, e, delta) - alpha, lo, hi, xtol=_EPS_TOL
    )
    # brentq may stop a hair on the non-rejected side; step back until rejected.
    step = _EPS_TOL
    while eps > lo and one_run_p_value(m, r, v, eps, delta) > alpha:
        eps, step = max(lo, eps - step), 2.0 * step
    return eps


def _ranking(scores: np.ndarray, seed: int) -> np.ndarray:
    """Canary indices from highest to lowest score; ties broken by a seeded coin.

    Tie-breaking must not use canary order (it may correlate with membership).
    """
    tiebreak = np.random.default_rng(seed).random(scores.size)
    return np.lexsort((tiebreak, -scores))


def one_run_epsilon_from_scores(
    scores: Any,
    is_member: Any,
    k_plus: int,
    k_minus: int,
    delta: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """One-run epsilon lower bound from scores with fixed guess counts.

    Guesses "member" for the ``k_plus`` highest scores and "non-member" for the
    ``k_minus`` lowest, abstaining on the rest (Steinke et al. 2023, Section 3 auditor).
    ``k_plus`` and ``k_minus`` must be fixed without looking at these canaries' labels
    (use :func:`choose_guess_counts` on other canaries, or
    :func:`one_run_epsilon_crossfit`). Tied scores at a cut are broken by a coin seeded
    with ``seed``, so the counts are exact and label-free.

    Returns:
        dict with ``m``, ``r`` (= k_plus + k_minus), ``v`` (correct guesses),
        ``k_plus``, ``k_minus``, ``epsilon_lb``, ``confidence``, ``delta``.
    """
    scores, labels = check_scores(scores, is_member, require_both_classes=False)
    m = labels.size
    k_plus, k_minus = int(k_plus), int(k_minus)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ValueError(
            f"need k_plus, k_minus >= 0 and k_plus + k_minus <= {m} canaries, got "
            f"k_plus={k_plus}, k_minus={k_minus}"
        )
    order = _ranking(scores, seed)
    correct_plus = int(labels[order[:k_plus]].sum())
    correct_minus = int((~labels[order[m - k_minus :]]).sum()) if k_minus else 0
    r, v = k_plus + k_minus, correct_plus + correct_minus
    return {
        "m": m,
        "r": r,
        "v": v,
        "k_plus": k_plus,
        "k_minus": k_minus,
        "epsilon_lb": one_run_epsilon_lower_bound(m, r, v, delta, confidence),
        "confidence": float(confidence),
        "delta": float(delta),
    }


def _candidate_pairs(candidates: Iterable[tuple[float, float]] | None) -> list[tuple[float, float]]:
    if candidates is None:
        pairs = [
            (fp, fm)
            for fp in _DEFAULT_FRACTIONS
            for fm in _DEFAULT_FRACTIONS
            if 0.0 < fp + fm <= 1.0
        ]
    else:
        pairs = [(float(fp), float(fm)) for fp, fm in candidates]
    for fp, fm in pairs:
        if fp < 0 or fm < 0 or fp + fm > 1 or fp + fm == 0:
            raise ValueError(
                "candidates are (fraction guessed member, fraction guessed non-member) "
                f"pairs with each >= 0 and 0 < sum <= 1, got {(fp, fm)}"
            )
    if not pairs:
        raise ValueError("candidates is empty")
    return pairs


def choose_guess_counts(
    scores_cal: Any,
    is_member_cal: Any,
    candidates: Iterable[tuple[float, float]] | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
    n_eval: int | None = None,
    seed: int = 0,
) -> tuple[int, int]:
    """Guess counts ``(k_plus, k_minus)`` chosen on calibration canaries.

    Each candidate is a pair of fractions (guessed member, guessed non-member) of the
    canaries; the one giving the largest one-run bound on the calibration canaries wins
    (first one on ties) and is scaled to an evaluation fold of ``n_eval`` canaries
    (default: the calibration size). The default grid crosses fractions
    0, 1%, 2%, 5%, 10%, 20%, 30%, 50%.
    """
    scores_cal, labels_cal = check_scores(scores_cal, is_member_cal, require_both_classes=False)
    n_cal = labels_cal.size
    n_eval = n_cal if n_eval is None else int(n_eval)
    if n_eval < 1:
        raise ValueError(f"n_eval must be >= 1, got {n_eval}")
    best, best_eps = None, -1.0
    for fp, fm in _candidate_pairs(candidates):
        k_plus, k_minus = _scale_pair(fp, fm, n_cal)
        eps = one_run_epsilon_from_scores(
            scores_cal, labels_cal, k_plus, k_minus, delta, confidence, seed
        )["epsilon_lb"]
        if eps > best_eps:
            best, best_eps = (fp, fm), eps
    assert best is not None
    return _scale_pair(best[0], best[1], n_eval)


def _scale_pair(fp: float, fm: float, n: int) -> tuple[int, int]:
    """Fractions to counts for ``n`` canaries, keeping k_plus + k_minus <= n."""
    k_plus = int(round(fp * n))
    k_minus = min(int(round(fm * n)), n - k_plus)
    return k_plus, k_minus


def _random_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into two halves by a seeded permutation (labels not used)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def one_run_epsilon_crossfit(
    scores: Any,
    is_member: Any,
    delta: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
    candidates: Iterable[tuple[float, float]] | None = None,
) -> dict:
    """One-run epsilon lower bound with guess counts chosen on held-apart canaries.

    Design: a seeded permutation, independent of the labels, splits the canaries into a
    calibration half and an evaluation half (not stratified: the theorem needs each
    evaluation canary's membership to stay an independent fair coin, and a split that
    looks at labels would break that). :func:`choose_guess_counts` picks the guess
    fractions on the calibration half; the bound is computed on the evaluation half only,
    with ``m`` = evaluation size. Conditioned on the calibration half, the evaluation
    coins are still fair and independent, so the bound is sound at ``confidence``. Only
    one direction is evaluated: swapping the halves and taking the larger bound would
    need a union bound (each at ``1 - (1 - confidence) / 2``) and usually buys nothing.

    Returns:
        the dict of :func:`one_run_epsilon_from_scores` for the evaluation half, plus
        ``n_calibration``, ``n_evaluation`` and ``seed``.
    """
    scores, labels = check_scores(scores, is_member, require_both_classes=False)
    if labels.size < 4:
        raise ValueError(f"crossfitting needs at least 4 canaries, got {labels.size}")
    cal, ev = _random_halves(labels.size, seed)
    k_plus, k_minus = choose_guess_counts(
        scores[cal], labels[cal], candidates, delta, confidence, n_eval=ev.size, seed=seed
    )
    result = one_run_epsilon_from_scores(
        scores[ev], labels[ev], k_plus, k_minus, delta, confidence, seed
    )
    result.update(n_calibration=int(cal.size), n_evaluation=int(ev.size), seed=int(seed))
    return result


def canaries_needed_for_epsilon(
    epsilon: float,
    confidence: float = 0.95,
    delta: float = 0.0,
    guess_fraction: float = 1.0,
    max_guesses: int = 10**7,
) -> dict:
    """How many guesses (and canaries) a one-run audit needs to show ``eps >= epsilon``.

    Assumes a perfect attack (all ``r`` guesses correct), so these are minimums; real
    attacks need more. ``r`` is the smallest number of guesses whose bound
    :func:`one_run_epsilon_lower_bound` ``(m, r, r, delta, confidence)`` reaches
    ``epsilon``, with ``m = ceil(r / guess_fraction)`` canaries (attacks are usually
    confident on only a few percent of canaries: pass e.g. ``guess_fraction=0.1``).
    For ``delta = 0``, ``r = ceil(log(1 - confidence) / log(q))``, ``q = e^eps/(1+e^eps)``.
    For ``delta > 0`` the search doubles ``r`` then bisects, assuming the bound grows
    with ``r`` (true when the ``delta`` term is small).

    Raises:
        ValueError: if no ``r <= max_guesses`` reaches ``epsilon``.
    """
    epsilon = float(epsilon)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    confidence = _check_confidence(confidence)
    delta = _check_delta(delta)
    guess_fraction = float(guess_fraction)
    if not 0.0 < guess_fraction <= 1.0:
        raise ValueError(f"guess_fraction must be in (0, 1], got {guess_fraction}")

    def canaries(r: int) -> int:
        return int(math.ceil(r / guess_fraction - 1e-9))

    def reaches(r: int) -> bool:
        return one_run_epsilon_lower_bound(canaries(r), r, r, delta, confidence) >= epsilon

    if delta == 0.0:
        q = float(special.expit(epsilon))
        r = max(1, int(math.ceil(math.log(1.0 - confidence) / math.log(q))))
        while not reaches(r):  # guard against rounding at the boundary
            r += 1
    else:
        hi = 1
        while not reaches(hi):
            hi *= 2
            if hi > max_guesses:
                raise ValueError(
                    f"no audit with <= {max_guesses} guesses shows eps >= {epsilon} at "
                    f"delta={delta}: the delta term dominates; lower delta or epsilon"
                )
        lo = hi // 2  # does not reach (or 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if reaches(mid):
                hi = mid
            else:
                lo = mid
        r = hi
    return {
        "epsilon": epsilon,
        "confidence": confidence,
        "delta": delta,
        "guesses": r,
        "canaries": canaries(r),
        "guess_fraction": guess_fraction,
        "note": "assumes every guess is correct (perfect attack); real attacks need more",
    }
