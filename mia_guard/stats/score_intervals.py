"""Score-type intervals that stay honest with few canaries: they never collapse to a point.

Asymptotic intervals (DeLong's variance, the bootstrap) have zero width when the sample
cannot vary: one canary per class, perfect separation, all scores tied. A zero-width
interval claims certainty the data do not have, and a release gate deciding on its
bounds would pass or block on two canaries. The intervals here invert a score test whose
variance is evaluated at the *hypothesised* value, as Wilson's interval does for a
proportion, so they keep a sensible width down to one canary per class:

* :func:`wilson_interval`: a binomial proportion (Wilson 1927).
* :func:`difference_interval`: the difference of two independent proportions, e.g. TPR −
  FPR at one threshold: Newcombe's (1998) hybrid score interval (his method 10), which
  combines the two Wilson intervals ("square and add").
* :func:`auc_score_interval`: the AUC (Mann–Whitney parameter): Newcombe's (2006) score
  interval with the Hanley–McNeil exponential-model variance, the class sizes replaced by
  their mean ``N* = (m + n) / 2``:
  ``V(θ) = θ(1−θ) / (m n) · [(2N* − 1) − 3(N* − 1) / ((2 − θ)(1 + θ))]``; at θ = 1/2 this
  is the exact null variance of the Mann–Whitney statistic, ``(m + n + 1) / (12 m n)``.

The metrics report the hull of these and their asymptotic intervals (see
:func:`mia_guard.stats.roc.auc_with_ci` and :func:`mia_guard.stats.metrics.advantage`):
with many canaries the two agree, with few the score interval keeps the width.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from .estimate import _check_confidence

#: Grid over [0, 1] on which the AUC score interval's ends are bracketed before refinement,
#: plus offsets down to 1e-12 around the estimate (narrow intervals of many canaries).
_GRID = np.linspace(0.0, 1.0, 2001)
_OFFSETS = np.logspace(-12, 0, 241)


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + _check_confidence(confidence) / 2.0))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (``n >= 1``); never of zero width."""
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(k1: int, n1: int, k0: int, n0: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for ``k1 / n1 − k0 / n0`` of two independent proportions (Newcombe 1998, method 10).

    With Wilson intervals ``[l1, u1]`` and ``[l0, u0]`` of the two proportions ``p1, p0``
    and ``d = p1 − p0``: ``[d − sqrt((p1 − l1)² + (u0 − p0)²), d + sqrt((u1 − p1)² + (p0 − l0)²)]``.
    """
    p1, p0 = k1 / n1, k0 / n0
    l1, u1 = wilson_interval(k1, n1, confidence)
    l0, u0 = wilson_interval(k0, n0, confidence)
    d = p1 - p0
    low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return max(-1.0, low), min(1.0, high)


def auc_score_variance(theta: np.ndarray | float, n_members: int, n_nonmembers: int) -> np.ndarray | float:
    """Newcombe's (2006) variance of the AUC at the hypothesised value ``theta`` (see the module docstring)."""
    n_star = (n_members + n_nonmembers) / 2.0
    theta = np.asarray(theta, dtype=np.float64)
    bracket = (2 * n_star - 1) - 3 * (n_star - 1) / ((2 - theta) * (1 + theta))
    return theta * (1 - theta) / (n_members * n_nonmembers) * bracket


def auc_score_interval(auc: float, n_members: int, n_nonmembers: int, confidence: float = 0.95) -> tuple[float, float]:
    """All θ in [0, 1] with ``|auc − θ| <= z · sqrt(V(θ))`` (:func:`auc_score_variance`): the
    score interval of an AUC measured on ``n_members`` and ``n_nonmembers`` canaries.

    Its ends are bracketed on a grid and refined by root finding; the interval always
    holds ``auc`` and has positive width for any class sizes >= 1.
    """
    auc = float(auc)
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"auc must be in [0, 1], got {auc}")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError(f"need at least one canary per class, got {n_members} and {n_nonmembers}")
    z = _z(confidence)

    def excess(theta: float) -> float:  # <= 0 inside the interval
        return abs(auc - theta) - z * math.sqrt(max(float(auc_score_variance(theta, n_members, n_nonmembers)), 0.0))

    grid = np.unique(np.clip(np.concatenate([_GRID, auc - _OFFSETS, [auc], auc + _OFFSETS]), 0.0, 1.0))
    variance = np.maximum(auc_score_variance(grid, n_members, n_nonmembers), 0.0)
    inside = np.abs(auc - grid) <= z * np.sqrt(variance)  # holds auc itself
    first, last = int(np.argmax(inside)), len(grid) - 1 - int(np.argmax(inside[::-1]))
    low = grid[first] if first == 0 else optimize.brentq(excess, grid[first - 1], grid[first], xtol=1e-14)
    high = grid[last] if last == len(grid) - 1 else optimize.brentq(excess, grid[last], grid[last + 1], xtol=1e-14)
    return min(float(low), auc), max(float(high), auc)
