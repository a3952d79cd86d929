"""The analysis ``"image"``: bits per dimension of image canaries, members vs non-members.

Image canaries (:mod:`mia_guard.canaries.images`) are token sequences of quantized
pixels; :func:`image_figures` turns their token statistics into the figures image-model
people read: bits per dimension for members and non-members, their gap, and a per-pixel
map.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

from ..scoring.token_stats import TokenStats
from ..stats.estimate import Estimate, mean_with_ci
from .registry import AnalysisInput, register_analysis

LN2 = math.log(2.0)


def _difference_with_ci(a: np.ndarray, b: np.ndarray, confidence: float) -> Estimate:
    """``mean(a) - mean(b)`` with a Welch (unequal-variance) t interval."""
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, math.nan, math.nan, confidence, "fewer than two canaries in a group: no interval")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Estimate(diff, diff, diff, confidence, "no spread in either group")
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return Estimate(diff, diff - half, diff + half, confidence)


def image_figures(stats: TokenStats, is_member: np.ndarray, confidence: float = 0.95) -> dict:
    """Bits-per-dimension figures of image canaries, members vs non-members (JSON-able).

    Args:
        stats: TokenStats ``[N, T]`` of image-token canaries (T scored pixels per image).
        is_member: bool ``[N]``.
        confidence: level of every interval.

    Returns:
        ``bits_per_dim`` (mean NLL per scored pixel token in bits, each canary one value):
        ``members``, ``non_members`` (Student t intervals) and ``gap`` = non-members minus
        members (Welch interval; > 0 means the model fits its training images better:
        overfitting / memorization); ``bits_per_image`` (total bits of the scored pixels)
        for both groups; ``position_bits``: mean bits at each scored position (a per-pixel
        map in raster order, ``[T]`` lists) for both groups; the group sizes.
    """
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.shape != (stats.num_canaries,):
        raise ValueError(f"is_member has shape {is_member.shape}, statistics cover {stats.num_canaries} canaries")
    if is_member.all() or not is_member.any():
        raise ValueError("image figures compare members with non-members; both groups need at least one canary")
    nll = stats.nll.double().numpy()
    mask = stats.mask.numpy()
    bits = np.where(mask, nll, 0.0) / LN2
    per_image = bits.sum(axis=1)
    per_dim = per_image / np.maximum(mask.sum(axis=1), 1)
    groups = {"members": is_member, "non_members": ~is_member}

    def position_map(rows: np.ndarray) -> list[float | None]:
        counts = mask[rows].sum(axis=0)
        means = bits[rows].sum(axis=0) / np.maximum(counts, 1)
        return [float(m) if c else None for m, c in zip(means, counts)]

    return {
        "bits_per_dim": {
            **{name: mean_with_ci(per_dim[rows], confidence).to_dict() for name, rows in groups.items()},
            "gap": _difference_with_ci(per_dim[~is_member], per_dim[is_member], confidence).to_dict(),
        },
        "bits_per_image": {name: mean_with_ci(per_image[rows], confidence).to_dict() for name, rows in groups.items()},
        "position_bits": {name: position_map(rows) for name, rows in groups.items()},
        "n_members": int(is_member.sum()),
        "n_non_members": int((~is_member).sum()),
    }


@register_analysis("image")
def image_analysis(inputs: AnalysisInput) -> dict:
    """The Auditor analysis ``"image"``: :func:`image_figures` over the canaries with finite statistics."""
    valid = np.asarray(inputs.valid, dtype=bool)
    return image_figures(inputs.stats.subset(valid), np.asarray(inputs.is_member)[valid], inputs.confidence)
