"""Covariance models for per-position statistics (the Σ of sequence LiRA).

A model describes the covariance of a canary's first ``L`` scored positions for any
``L`` it supports, through ``matrix(L) -> [L, L]``; the likelihood of a canary with
``L`` scored tokens uses that top-left block, so canaries of different lengths are
scored under one consistent model.

Estimators (``fit_covariance(residuals, mask, method)``), all fitted on *residuals*
(statistics minus their class mean; see :func:`pooled_residuals`):

- ``"diagonal"``    per-position variances, no correlation (the independence baseline
  that naive per-token LiRA assumes).
- ``"ledoit_wolf"`` the full ``[T, T]`` sample covariance shrunk towards a scaled
  identity with the Ledoit–Wolf (2004) optimal intensity
  (``sklearn.covariance.ledoit_wolf``). Needs rows of equal length; defined only up to
  the fitted ``T``.
- ``"ar1"``         per-position variances and a stationary AR(1) correlation
  ``rho ** |i - j|`` with ``rho`` the lag-1 correlation pooled over positions.
  Positive definite for every length; extends past the fitted positions.
- ``"toeplitz"``    per-position variances and a stationary correlation with a free
  value per lag, each pooled over all positions and canaries. The lag sums are divided
  by the number of cells (the "biased" autocorrelation estimator), which makes the
  sequence positive semi-definite for every length, whatever the mask.

The stationary models (diagonal, ar1, toeplitz) handle masked cells (variable-length
canaries) and positions never observed in the fit (their variance is the pooled one).

"Pooled" covariance (one Σ shared by members and non-members) is not a separate
estimator: it is any estimator fitted on the within-class residuals of both classes,
which :func:`pooled_residuals` computes from group labels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("diagonal", "ledoit_wolf", "ar1", "toeplitz")
#: Estimators that need every fitted row to have all ``T`` positions.
FULL_ROW_ESTIMATORS = frozenset({"ledoit_wolf"})
#: |rho| of the AR(1) model is capped here so the correlation stays well conditioned.
MAX_AR1_RHO = 0.99
#: Relative variance floor: no position's variance falls below this times the mean variance.
RELATIVE_VARIANCE_FLOOR = 1e-6


@dataclass(frozen=True)
class DenseCovariance:
    """A full ``[T, T]`` covariance; ``matrix(L)`` is its top-left block (``L <= T``)."""

    cov: np.ndarray
    shrinkage: float = 0.0

    @property
    def num_positions(self) -> int:
        return int(self.cov.shape[0])

    def matrix(self, length: int) -> np.ndarray:
        if length > self.num_positions:
            raise ValueError(
                f"this covariance was fitted on {self.num_positions} positions and cannot describe "
                f"{length}; use a stationary model (covariance='ar1' or 'toeplitz') for longer canaries"
            )
        return self.cov[:length, :length]


@dataclass(frozen=True)
class StationaryCovariance:
    """Per-position standard deviations times a stationary (Toeplitz) correlation.

    Attributes:
        std: ``[T]`` standard deviation of each fitted position.
        fallback_std: standard deviation used for positions ``>= T``.
        lag_correlation: correlation at lags ``0, 1, ..`` (``[0] == 1``); lags past its
            end are 0. Ignored when ``ar1_rho`` is set.
        ar1_rho: if set, the correlation at lag ``k`` is ``ar1_rho ** k``.
    """

    std: np.ndarray
    fallback_std: float
    lag_correlation: np.ndarray
    ar1_rho: float | None = None

    def correlation(self, length: int) -> np.ndarray:
        lags = np.abs(np.subtract.outer(np.arange(length), np.arange(length)))
        if self.ar1_rho is not None:
            return self.ar1_rho ** lags
        padded = np.zeros(max(length, len(self.lag_correlation)))
        padded[: len(self.lag_correlation)] = self.lag_correlation
        return padded[lags]

    def matrix(self, length: int) -> np.ndarray:
        std = np.full(length, self.fallback_std)
        known = min(length, len(self.std))
        std[:known] = self.std[:known]
        return self.correlation(length) * np.outer(std, std)


PositionCovariance = DenseCovariance | StationaryCovariance


def pooled_residuals(values: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-group residuals, scaled so that ``E[r r'] = Σ`` (one Σ shared by the groups).

    Each cell is centered on its group's mean at that position and multiplied by
    ``sqrt(c / (c - 1))`` (``c`` = the group's observed cells there), undoing the
    shrinkage that centering on an estimated mean causes. Cells of a group observed
    once at a position carry no information about spread and are masked out; rows
    left with no cell are dropped.

    Args:
        values: ``[n, T]`` statistics.
        mask: bool ``[n, T]`` observed cells.
        groups: ``[n]`` group label per row (e.g. membership, or (canary, class) pairs).

    Returns:
        ``(residuals [m, T], mask [m, T])`` with ``m <= n``; masked cells hold 0.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    groups = np.asarray(groups)
    residuals = np.zeros_like(values)
    keep = np.zeros_like(mask)
    for group in np.unique(groups):
        rows = groups == group
        cells = mask[rows]
        counts = cells.sum(axis=0)
        means = np.where(cells, values[rows], 0.0).sum(axis=0) / np.maximum(counts, 1)
        usable = counts >= 2
        scale = np.sqrt(counts / np.maximum(counts - 1, 1))
        residuals[rows] = np.where(cells & usable, (values[rows] - means) * scale, 0.0)
        keep[rows] = cells & usable
    nonempty = keep.any(axis=1)
    return residuals[nonempty], keep[nonempty]


def fit_covariance(residuals: np.ndarray, mask: np.ndarray, method: str = "ledoit_wolf") -> PositionCovariance:
    """Fit one of :data:`ESTIMATORS` to centered residuals (see :func:`pooled_residuals`).

    Args:
        residuals: ``[n, T]`` centered statistics (masked cells ignored).
        mask: bool ``[n, T]`` observed cells.
        method: one of :data:`ESTIMATORS`.

    Warns:
        UserWarning: when no cell carries spread information (unit variance is used).
    """
    if method not in ESTIMATORS:
        raise ValueError(f"unknown covariance estimator {method!r}; choose one of {', '.join(ESTIMATORS)}")
    residuals = np.asarray(residuals, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    residuals = np.where(mask, residuals, 0.0)
    if method == "ledoit_wolf":
        return _fit_ledoit_wolf(residuals, mask)
    std, fallback_std = _position_std(residuals, mask)
    z = residuals / std
    if method == "diagonal":
        return StationaryCovariance(std, fallback_std, np.ones(1))
    if method == "ar1":
        return StationaryCovariance(std, fallback_std, np.ones(1), ar1_rho=_lag1_correlation(z, mask))
    return StationaryCovariance(std, fallback_std, _lag_correlations(z))


def _fit_ledoit_wolf(residuals: np.ndarray, mask: np.ndarray) -> DenseCovariance:
    """Ledoit–Wolf (2004) shrinkage of the residuals' covariance (residuals are centered)."""
    if not mask.all():
        raise ValueError(
            "the ledoit_wolf estimator needs every canary to have the same number of scored "
            "tokens; use covariance='ar1' or 'toeplitz' for variable-length canaries"
        )
    if residuals.shape[0] < 2:
        raise ValueError(f"ledoit_wolf needs at least 2 residual rows, got {residuals.shape[0]}")
    from sklearn.covariance import ledoit_wolf

    cov, shrinkage = ledoit_wolf(residuals, assume_centered=True)
    if np.trace(cov) <= 0.0:
        _warn_no_spread()
        return DenseCovariance(np.eye(cov.shape[0]), 1.0)
    return DenseCovariance(cov, shrinkage)


def _position_std(residuals: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-position std (pooled value where a position has < 2 cells) and the pooled std."""
    counts = mask.sum(axis=0)
    sums = (residuals**2).sum(axis=0)
    total = int(counts.sum())
    if total == 0 or sums.sum() <= 0.0:
        _warn_no_spread()
        return np.ones(residuals.shape[1]), 1.0
    pooled_var = sums.sum() / total
    var = np.where(counts >= 2, sums / np.maximum(counts, 1), pooled_var)
    var = np.maximum(var, RELATIVE_VARIANCE_FLOOR * pooled_var)
    return np.sqrt(var), float(np.sqrt(pooled_var))


def _warn_no_spread() -> None:
    warnings.warn(
        "no within-class variation to estimate a covariance from (too few canaries, or the "
        "statistic is constant); using unit variance, so scores are plain squared distances",
        UserWarning,
        stacklevel=4,
    )


def _lag1_correlation(z: np.ndarray, mask: np.ndarray) -> float:
    pairs = mask[:, 1:] & mask[:, :-1]
    if not pairs.any():
        return 0.0
    left, right = np.where(pairs, z[:, :-1], 0.0), np.where(pairs, z[:, 1:], 0.0)
    denom = np.sqrt(np.sum(left**2) * np.sum(right**2))
    rho = np.sum(left * right) / denom if denom > 0 else 0.0
    return float(np.clip(rho, -MAX_AR1_RHO, MAX_AR1_RHO))


def _lag_correlations(z: np.ndarray) -> np.ndarray:
    """Pooled autocorrelation by lag, divided by the cell count (PSD for every length)."""
    num_positions = z.shape[1]
    sums = np.array([np.sum(z[:, : num_positions - k] * z[:, k:]) for k in range(num_positions)])
    if sums[0] <= 0.0:
        return np.ones(1)
    return sums / sums[0]


def robust_cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``cov``, adding diagonal jitter if it is not positive definite.

    Jitter grows from ``1e-10`` to ``1e-2`` times the mean variance; if that still
    fails, eigenvalues are floored at ``1e-8`` times the largest one.
    """
    cov = 0.5 * (cov + cov.T)
    scale = float(np.mean(np.diag(cov))) if cov.size else 1.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    eye = np.eye(cov.shape[0])
    for jitter in (0.0, *(scale * 10.0**k for k in range(-10, -1))):
        try:
            return np.linalg.cholesky(cov + jitter * eye)
        except np.linalg.LinAlgError:
            continue
    eigval, eigvec = np.linalg.eigh(cov)
    floor = max(1e-8 * float(np.max(np.abs(eigval))), 1e-12 * scale)
    repaired = (eigvec * np.maximum(eigval, floor)) @ eigvec.T
    return np.linalg.cholesky(0.5 * (repaired + repaired.T) + floor * eye)


def estimator_for_lengths(method: str, mask: np.ndarray) -> str:
    """``method``, or ``"ar1"`` (with a warning) if it needs equal lengths and ``mask`` has several.

    Args:
        method: requested estimator.
        mask: bool ``[N, T]`` scored-token mask of the canaries to be modelled.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"unknown covariance estimator {method!r}; choose one of {', '.join(ESTIMATORS)}")
    lengths = np.asarray(mask, dtype=bool).sum(axis=1)
    if method in FULL_ROW_ESTIMATORS and len(np.unique(lengths)) > 1:
        warnings.warn(
            f"canaries have different numbers of scored tokens ({int(lengths.min())}..{int(lengths.max())}); "
            f"covariance={method!r} needs equal lengths, using the stationary 'ar1' model instead",
            UserWarning,
            stacklevel=3,
        )
        return "ar1"
    return method
