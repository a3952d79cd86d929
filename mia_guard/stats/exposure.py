"""Canary exposure (Carlini et al. 2019, "The Secret Sharer"): rank-based exposure of
templated canaries, estimated by sampling with skew-normal extrapolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ExposureResult:
    """Exposure (bits) of inserted canaries, Carlini et al. (2019).

    Attributes:
        exposures: float64 ``[n_members]``, one per inserted canary, in ``[0, cap]``.
        extrapolated: bool ``[n_members]``, True where the skew-normal tail was used.
        cap: ``log2 |S|``, the largest possible exposure.
        n_reference: non-inserted canaries the ranks were estimated from.
        method: ``"sampling"`` or ``"sampling+skewnorm"`` (some canaries extrapolated),
            or ``"exact-rank"`` for :func:`exposure_from_ranks`.
    """

    exposures: np.ndarray
    extrapolated: np.ndarray
    cap: float
    n_reference: int
    method: str

    @property
    def max(self) -> float:
        return float(np.max(self.exposures))

    @property
    def mean(self) -> float:
        return float(np.mean(self.exposures))

    def to_dict(self) -> dict:
        """JSON-able dict (per-canary values as lists)."""
        return {
            "exposures": [float(x) for x in self.exposures],
            "extrapolated": [bool(x) for x in self.extrapolated],
            "cap": float(self.cap),
            "n_reference": int(self.n_reference),
            "method": self.method,
            "max": self.max,
            "mean": self.mean,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ExposureResult":
        """Inverse of :meth:`to_dict` (``max``/``mean`` are recomputed)."""
        try:
            return cls(
                exposures=np.asarray(data["exposures"], dtype=np.float64),
                extrapolated=np.asarray(data["extrapolated"], dtype=bool),
                cap=float(data["cap"]),
                n_reference=int(data["n_reference"]),
                method=str(data["method"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not an ExposureResult dict ({err!r})") from err


def _check_space(secret_space_size: float) -> float:
    size = float(secret_space_size)
    if not size >= 2:
        raise ValueError(f"secret_space_size must be >= 2, got {secret_space_size}")
    return size


def exposure_from_ranks(ranks: Any, secret_space_size: float) -> ExposureResult:
    """Exposure from exact ranks: ``log2 |S| - log2 rank``.

    ``ranks`` are 1-based positions of each inserted canary among all ``|S|`` candidate
    secrets sorted by increasing NLL (rank 1 = the model's favourite), e.g. from
    enumerating a small secret space.
    """
    size = _check_space(secret_space_size)
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if np.any(~np.isfinite(ranks)) or np.any(ranks < 1) or np.any(ranks > size):
        raise ValueError(f"ranks must lie in [1, |S| = {size:g}]")
    cap = math.log2(size)
    return ExposureResult(
        exposures=cap - np.log2(ranks),
        extrapolated=np.zeros(ranks.size, dtype=bool),
        cap=cap,
        n_reference=0,
        method="exact-rank",
    )


def exposure(
    member_nll: Any, nonmember_nll: Any, secret_space_size: float
) -> ExposureResult:
    """Exposure of inserted canaries, ranked among non-inserted ones of the same template.

    ``member_nll`` ``[n_members]`` and ``nonmember_nll`` ``[n_reference]`` are each
    canary's total NLL of its secret (log-perplexity; any log base). Non-inserted canaries
    are random draws from the same secret space ``S`` (``|S| = secret_space_size``; call
    once per template), so
    the fraction ``p`` of them with NLL <= a canary's NLL estimates ``rank / |S|`` and

        exposure = log2 |S| - log2(|S| * p) = -log2 p,   capped at log2 |S|.

    Ties count against the canary (conservative). Limits: with ``n`` references the
    sampled estimate is at most ``log2 n`` and its relative error grows as ``p`` shrinks.
    When a canary's NLL is below every reference (``p = 0``), a skew-normal is fitted to
    the reference NLLs (as Carlini et al. do) and ``exposure = -log2 CDF(nll)``, floored
    at ``log2 n`` (it beat all ``n`` samples) and capped at ``log2 |S|``; this tail
    extrapolation is a model, not a measurement, and is flagged in ``extrapolated``.
    """
    size = _check_space(secret_space_size)
    members = np.asarray(member_nll, dtype=np.float64)
    reference = np.asarray(nonmember_nll, dtype=np.float64)
    for name, arr, need in (("member_nll", members, 1), ("nonmember_nll", reference, 2)):
        if arr.ndim != 1 or arr.size < need:
            raise ValueError(
                f"{name} must be 1-D with at least {need} value(s), got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{name} has {int((~np.isfinite(arr)).sum())} non-finite value(s); secret "
                "NLLs must be finite"
            )
    cap = math.log2(size)
    n_ref = reference.size
    at_or_below = np.searchsorted(np.sort(reference), members, side="right")
    beyond = at_or_below == 0
    with np.errstate(divide="ignore"):
        exposures = -np.log2(at_or_below / n_ref)
    if beyond.any():
        params = stats.skewnorm.fit(reference)
        log_cdf = stats.skewnorm.logcdf(members[beyond], *params)
        exposures[beyond] = np.maximum(-log_cdf / math.log(2.0), math.log2(n_ref))
    exposures = np.clip(exposures, 0.0, cap)
    return ExposureResult(
        exposures=exposures,
        extrapolated=beyond,
        cap=cap,
        n_reference=n_ref,
        method="sampling+skewnorm" if beyond.any() else "sampling",
    )
