"""Per-canary feature vectors for the learned attacks, built from TokenStats.

One row per canary, one column per named feature (float64 ``[N, F]``). The features
summarise each canary's scored tokens (the secret for templated canaries) with the
statistics the hand-made attacks use, so a classifier can weigh and combine them:

- for ``nll``, ``confidence`` (``log p - log(1 - p)``) and ``entropy``: the mean, the
  standard deviation and the 0/25/50/75/100 % quantiles over the canary's tokens;
- ``top1_rate`` (share of tokens that were the model's argmax), ``logp_std_mean``;
- ``min_k`` and ``min_k_plus_plus`` at ``k`` (:mod:`mia_guard.attacks.reference_free`);
- ``log_length``: log of the number of scored tokens (varies for text canaries);
- with ``texts``: ``zlib`` (mean NLL over the zlib-compressed length, negated);
- with a ``reference`` (the same canaries under e.g. the step-0 model): the
  calibrated versions, cell by cell ``reference - audited`` for NLL and entropy and
  ``audited - reference`` for confidence and top-1 (so larger = training helped
  more), summarised the same way (mean, std, quantiles for NLL; means for the rest).

Features are unsigned: the classifier learns which direction means "member".
Feature names are stable, so a classifier fitted on one run's features can score
another run's (:mod:`mia_guard.attacks.learned`, shadow mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..scoring.token_stats import TokenStats
from .reference_free import min_k, min_k_plus_plus, zlib_ratio
from .registry import AttackContext

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
SUMMARISED = ("nll", "confidence", "entropy")


@dataclass(frozen=True)
class CanaryFeatures:
    """Feature matrix ``values`` (float64 ``[N, F]``) with its column ``names`` (length F)."""

    values: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"feature matrix {self.values.shape} does not match {len(self.names)} names")

    @property
    def num_canaries(self) -> int:
        return int(self.values.shape[0])


def masked_quantiles(values: np.ndarray, mask: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Per-row quantiles over the masked cells (linear interpolation), ``[N, len(quantiles)]``.

    Rows without any masked cell give NaN.
    """
    values = np.where(mask, values, np.inf)
    ordered = np.sort(values, axis=1)
    lengths = mask.sum(axis=1)
    out = np.full((values.shape[0], len(quantiles)), np.nan)
    rows = np.flatnonzero(lengths > 0)
    last = (lengths[rows] - 1).astype(np.float64)
    for col, q in enumerate(quantiles):
        position = q * last
        low = np.floor(position).astype(np.int64)
        high = np.ceil(position).astype(np.int64)
        frac = position - low
        out[rows, col] = (1.0 - frac) * ordered[rows, low] + frac * ordered[rows, high]
    return out


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.maximum(mask.sum(axis=1), 1)
    filled = np.where(mask, values, 0.0)
    mean = filled.sum(axis=1) / counts
    var = (np.where(mask, (values - mean[:, None]) ** 2, 0.0)).sum(axis=1) / counts
    return mean, np.sqrt(var)


def _summary(name: str, values: np.ndarray, mask: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    mean, std = _masked_mean_std(values, mask)
    quantiles = masked_quantiles(values, mask, QUANTILES)
    columns = [mean, std] + [quantiles[:, i] for i in range(len(QUANTILES))]
    names = [f"{name}_mean", f"{name}_std"] + [f"{name}_q{int(q * 100)}" for q in QUANTILES]
    return columns, names


def canary_features(
    stats: TokenStats,
    *,
    texts: Sequence[str] | None = None,
    reference: TokenStats | None = None,
    k: float = 0.2,
) -> CanaryFeatures:
    """The feature matrix of ``stats``' canaries (see the module docstring for the columns).

    Args:
        stats: the audited model's TokenStats ``[N, T]``.
        texts: the canary texts (adds the ``zlib`` feature); ``None`` leaves it out.
        reference: the same canaries scored by a reference model (adds the ``ref_*``
            features); it must score the same positions as ``stats``.
        k: the fraction of lowest tokens for the Min-K% and Min-K%++ features.
    """
    mask = stats.mask.numpy()
    columns: list[np.ndarray] = []
    names: list[str] = []
    for name in SUMMARISED:
        cols, labels = _summary(name, stats.field(name).double().numpy(), mask)
        columns += cols
        names += labels
    ctx = AttackContext(stats=stats, texts=texts)
    columns += [
        stats.masked_mean("top1"),
        stats.masked_mean("logp_std"),
        min_k(ctx, k=k),
        min_k_plus_plus(ctx, k=k),
        np.log(np.maximum(mask.sum(axis=1), 1).astype(np.float64)),
    ]
    names += ["top1_rate", "logp_std_mean", "min_k", "min_k_plus_plus", "log_length"]
    if texts is not None:
        if len(texts) != stats.num_canaries:
            raise ValueError(f"got {len(texts)} texts for {stats.num_canaries} canaries")
        columns.append(zlib_ratio(ctx))
        names.append("zlib")
    if reference is not None:
        cols, labels = _reference_features(stats, reference)
        columns += cols
        names += labels
    return CanaryFeatures(np.column_stack(columns).astype(np.float64), tuple(names))


def _reference_features(stats: TokenStats, reference: TokenStats) -> tuple[list[np.ndarray], list[str]]:
    mask = stats.mask.numpy()
    if reference.mask.shape != stats.mask.shape or not np.array_equal(reference.mask.numpy(), mask):
        raise ValueError(
            f"the reference TokenStats (mask {tuple(reference.mask.shape)}) do not score the same canary "
            f"positions as the audited model ({tuple(stats.mask.shape)}); score the same CanarySet with both"
        )

    def diff(name: str, sign: float) -> np.ndarray:
        return sign * (stats.field(name).double().numpy() - reference.field(name).double().numpy())

    columns, names = _summary("ref_nll_gain", diff("nll", -1.0), mask)
    for name, sign, label in (
        ("confidence", 1.0, "ref_confidence_gain_mean"),
        ("entropy", -1.0, "ref_entropy_drop_mean"),
        ("top1", 1.0, "ref_top1_gain_mean"),
    ):
        columns.append(_masked_mean_std(diff(name, sign), mask)[0])
        names.append(label)
    return columns, names
