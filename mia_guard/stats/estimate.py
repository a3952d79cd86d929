"""Point estimates with their confidence interval: :class:`Estimate`, Student-t means,
Clopper-Pearson binomial intervals.

No number leaves :mod:`mia_guard.stats` without its uncertainty (docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


def _to_json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _from_json_float(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        value: the point estimate; NaN when the data cannot resolve the quantity.
        low, high: interval ends (NaN when no interval can be given).
        confidence: the interval's nominal coverage, e.g. ``0.95``.
        note: why the value or interval is missing or degenerate, empty otherwise.
    """

    value: float
    low: float
    high: float
    confidence: float
    note: str = ""

    @property
    def resolvable(self) -> bool:
        """False when ``value`` is NaN because the data cannot resolve it (see ``note``)."""
        return not math.isnan(self.value)

    def to_dict(self) -> dict:
        """JSON-able dict; NaN and infinities are written as ``None``."""
        return {
            "value": _to_json_float(self.value),
            "low": _to_json_float(self.low),
            "high": _to_json_float(self.high),
            "confidence": float(self.confidence),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Estimate":
        """Inverse of :meth:`to_dict` (``None`` becomes NaN)."""
        try:
            return cls(
                value=_from_json_float(data["value"]),
                low=_from_json_float(data["low"]),
                high=_from_json_float(data["high"]),
                confidence=float(data["confidence"]),
                note=str(data.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not an Estimate dict ({err!r}): {data!r}") from err

    def __str__(self) -> str:
        if not self.resolvable:
            return f"n/a ({self.note})" if self.note else "n/a"
        if math.isnan(self.low) or math.isnan(self.high):
            return f"{self.value:.3f} [no interval]"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    return confidence


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial proportion ``k / n``.

    Each tail holds ``(1 - confidence) / 2``
    (``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="exact")``).
    """
    confidence = _check_confidence(confidence)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def mean_with_ci(values: Any, confidence: float = 0.95) -> Estimate:
    """Mean of ``values`` (e.g. member canary losses) with a Student-t interval.

    Assumes independent values; with one value the interval is NaN, with equal values a
    point (``note`` says so).

    Raises:
        ValueError: empty input, not 1-D, or non-finite values.
    """
    confidence = _check_confidence(confidence)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {arr.shape}")
    n_bad = int((~np.isfinite(arr)).sum())
    if n_bad:
        raise ValueError(
            f"values contain {n_bad} NaN/inf entr{'y' if n_bad == 1 else 'ies'} out of "
            f"{arr.size}; drop them before averaging"
        )
    mean = float(arr.mean())
    if arr.size == 1:
        return Estimate(mean, math.nan, math.nan, confidence, "one value: no interval")
    sem = float(stats.sem(arr))
    if sem == 0.0:  # scipy wants a positive scale; equal values leave no spread to widen the interval
        return Estimate(mean, mean, mean, confidence, "all values are equal: the interval is a point")
    low, high = stats.t.interval(confidence, df=arr.size - 1, loc=mean, scale=sem)
    return Estimate(mean, float(low), float(high), confidence)
