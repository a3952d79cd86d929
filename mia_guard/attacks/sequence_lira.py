"""Correlation-aware sequence LiRA (the seed method, docs/architecture.md; after Rossi et al. 2025).

Instead of reducing a canary to its mean loss, keep the vector ``s = (s_1..s_L)`` of
its per-token statistic (:func:`mia_guard.attacks.lira.statistic_matrix`; higher =
better predicted; column ``j`` = the ``j``-th secret token of a templated canary) and
fit multivariate Gaussians across canaries::

    online:   score(x) = log N(s; mu_in, Σ_in) - log N(s; mu_out, Σ_out)
    offline:  score(x) = 1' Σ_out⁻¹ (s - mu_out) / sqrt(1' Σ_out⁻¹ 1)

The offline score is the generalized-least-squares estimate of a common upward shift
of ``s`` away from the non-member mean, in units of its standard error: it is
``N(0, 1)`` for a non-member whatever its length, and positive when the canary's
tokens are better predicted than non-members' are, i.e. higher = member.

When it beats the loss (mean NLL) test, and when it cannot — in one run with
templated random secrets:

- *The member/non-member gap differs by position.* Every canary of a template shares
  its prefix, so the first secret token is close to unpredictable even for a member
  (the model cannot tell which inserted secret follows the shared prefix); once the
  first tokens pin down one memorized secret, the later ones become predictable for
  members while staying at chance for non-members. ``mu_in - mu_out`` therefore grows
  along the secret. The loss weights all positions equally, diluting the informative
  late positions with the uninformative early ones; the likelihood ratio weights each
  position by its evidence.
- *Correlated tokens are not independent evidence.* Whatever moves all of a canary's
  tokens together (a canary-level nuisance; a member the model has locked onto
  staying locked for several tokens; in-distribution text with real dependencies)
  makes the *contrast* between late and early positions much less noisy than either
  alone, and Σ⁻¹ uses the contrast to cancel the shared part. A diagonal Σ (per-token
  LiRA under independence) counts correlated tokens as separate evidence.
- *Members may be more (or less) variable than non-members*, which the separate
  ``Σ_in`` of the online form captures.

Each of these is an estimated quantity, and the loss estimates nothing. On a tiny
byte-level GPT-2 with 256 random-secret canaries the per-token statistics were
nearly uncorrelated (lag-1 correlation |r| < 0.05 for members and non-members) and
the per-position gaps were small and noisy, so the fitted score matched the loss at
best and fell below it while the signal was weak; with a shifted, correlated
structure (tests/test_sequence_lira.py) it gains clearly. Two safeguards keep the
estimation noise down:

- the per-position gap ``mu_in - mu_out`` is shrunk towards its mean over positions
  (:func:`shrink_to_mean`, empirical Bayes): equal gaps collapse to a uniform shift
  (the score then behaves like the loss / GLS shift), distinct gaps are kept
  (``shrink_gap=False`` turns this off);
- ``pooled=True`` fits one Σ for both classes (a linear score, half the parameters),
  which was as good or better whenever members were not clearly more variable.

Canaries of a template are exchangeable, so the means and Σ are estimated *across
canaries* of a single run, cross-fitted over stratified canary folds
(:func:`mia_guard.attacks.crossfit.cross_fit`): the IN fit uses only training-fold
members, the OUT fit only training-fold non-members, and no canary's score depends on
its own label. Σ needs shrinkage when canaries are few compared with ``T²``
(Ledoit–Wolf by default; see :mod:`mia_guard.attacks.covariance`). A canary with ``L``
scored tokens is scored under the ``[L, L]`` top-left block; canaries of different
lengths switch the model to a stationary AR(1) Σ, which is consistent across lengths.
With fewer than :data:`MIN_CANARIES_PER_CLASS` canaries of a class per training fold
the fit falls back (with a warning) to a pooled AR(1) (or pooled diagonal) Σ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from .covariance import (
    PositionCovariance,
    estimator_for_lengths,
    fit_covariance,
    pooled_residuals,
    robust_cholesky,
)
from .crossfit import cross_fit
from .lira import statistic_matrix
from .registry import AttackContext, register

#: Below this many canaries of a class per training fold, Σ is a pooled AR(1) (or diagonal).
MIN_CANARIES_PER_CLASS = 8
_LOG_2PI = float(np.log(2.0 * np.pi))


# ---------------------------------------------------------------------- Gaussian pieces
def mvn_logpdf(residuals: np.ndarray, lengths: np.ndarray, cov: PositionCovariance) -> np.ndarray:
    """``log N(r; 0, Σ_L)`` of each row's first ``L`` cells, shape ``[n]``.

    Args:
        residuals: ``[n, T]`` statistics minus their mean.
        lengths: ``[n]`` scored tokens per row (0 gives 0).
        cov: the covariance model; row ``i`` uses ``cov.matrix(lengths[i])``.
    """
    out = np.zeros(len(lengths))
    for length in np.unique(lengths):
        if length == 0:
            continue
        rows = lengths == length
        chol = robust_cholesky(cov.matrix(int(length)))
        whitened = solve_triangular(chol, residuals[rows, :length].T, lower=True)
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        out[rows] = -0.5 * (np.sum(whitened**2, axis=0) + log_det + length * _LOG_2PI)
    return out


def gls_shift(residuals: np.ndarray, lengths: np.ndarray, cov: PositionCovariance) -> np.ndarray:
    """Standardized GLS estimate of a common shift, ``1'Σ⁻¹r / sqrt(1'Σ⁻¹1)``, shape ``[n]``.

    ``N(0, 1)`` when ``r ~ N(0, Σ)``; positive when the row lies above its mean.
    """
    out = np.zeros(len(lengths))
    for length in np.unique(lengths):
        if length == 0:
            continue
        rows = lengths == length
        chol = robust_cholesky(cov.matrix(int(length)))
        weights = cho_solve((chol, True), np.ones(length))
        out[rows] = residuals[rows, :length] @ weights / np.sqrt(np.sum(weights))
    return out


def shrink_to_mean(estimates: np.ndarray, noise_var: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
    """Empirical-Bayes (James–Stein) shrinkage of noisy estimates towards their mean, along axis 0.

    Each estimate moves towards the mean of the ``observed`` ones by the factor
    ``tau² / (tau² + noise_var)``, where ``tau²`` (the spread of the true values) is
    the observed spread minus the mean noise variance, floored at 0. Unobserved
    entries get the mean. Fewer than 3 observed entries: returned unchanged.

    Args:
        estimates: ``[M, ...]`` estimates.
        noise_var: same shape, each estimate's sampling variance.
        observed: bool ``[M]``, the entries with a real estimate (default all).
    """
    observed = np.ones(len(estimates), dtype=bool) if observed is None else observed
    if observed.sum() < 3:
        return estimates
    mean = estimates[observed].mean(axis=0)
    between = np.maximum(estimates[observed].var(axis=0, ddof=1) - noise_var[observed].mean(axis=0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(between > 0, between / (between + noise_var), 0.0)
    weight = np.where(np.reshape(observed, (-1,) + (1,) * (estimates.ndim - 1)), weight, 0.0)
    return mean + weight * (estimates - mean)


@dataclass(frozen=True)
class SequenceGaussian:
    """A fitted Gaussian over per-position statistics: ``mean [T]`` and a covariance model."""

    mean: np.ndarray
    cov: PositionCovariance


def position_means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean per position over observed cells, ``[T]``; unobserved positions get the overall mean."""
    counts = mask.sum(axis=0)
    sums = np.where(mask, values, 0.0).sum(axis=0)
    overall = sums.sum() / counts.sum() if counts.sum() else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


# ---------------------------------------------------------------------- fit and score
def fit_sequence_gaussians(
    values: np.ndarray,
    mask: np.ndarray,
    is_member: np.ndarray,
    index: np.ndarray,
    *,
    online: bool = True,
    covariance: str = "ledoit_wolf",
    pooled: bool = False,
    shrink_gap: bool = True,
) -> dict[bool, SequenceGaussian]:
    """Fit the OUT (and, if ``online``, IN) Gaussian on canaries ``index`` only.

    Args:
        values, mask: ``[N, T]`` statistic and scored-token mask.
        is_member: bool ``[N]`` labels (only ``index``'s are read).
        index: canaries the fit may use.
        online: also fit the member Gaussian.
        covariance: estimator name (:data:`mia_guard.attacks.covariance.ESTIMATORS`).
        pooled: one Σ for both classes from within-class residuals.
        shrink_gap: shrink the per-position gap ``mu_in - mu_out`` towards its mean over
            positions (:func:`shrink_to_mean`; see the module docstring).

    Returns:
        ``{False: out_fit}`` or ``{True: in_fit, False: out_fit}``.
    """
    index = index[np.isfinite(values[index]).all(axis=1)]
    labels = (True, False) if online else (False,)
    rows = {label: index[is_member[index] == label] for label in labels}
    if pooled:
        both = np.concatenate(list(rows.values()))
        shared = fit_covariance(*pooled_residuals(values[both], mask[both], is_member[both]), covariance)
        covs = {label: shared for label in labels}
    else:
        covs = {
            label: fit_covariance(*pooled_residuals(values[r], mask[r], np.zeros(len(r))), covariance)
            for label, r in rows.items()
        }
    means = {label: position_means(values[r], mask[r]) for label, r in rows.items()}
    if online and shrink_gap:
        counts = {label: mask[r].sum(axis=0) for label, r in rows.items()}
        width = values.shape[1]
        noise = sum(np.diag(covs[label].matrix(width)) / np.maximum(counts[label], 1) for label in labels)
        observed = (counts[True] > 0) & (counts[False] > 0)
        means[True] = means[False] + shrink_to_mean(means[True] - means[False], noise, observed)
    return {label: SequenceGaussian(means[label], covs[label]) for label in labels}


def score_sequence(
    fits: dict[bool, SequenceGaussian], values: np.ndarray, mask: np.ndarray, *, online: bool = True
) -> np.ndarray:
    """Online log-likelihood ratio or offline GLS shift of each row, ``[n]``, higher = member."""
    lengths = mask.sum(axis=1)
    out_fit = fits[False]
    if not online:
        return gls_shift(values - out_fit.mean, lengths, out_fit.cov)
    in_fit = fits[True]
    return mvn_logpdf(values - in_fit.mean, lengths, in_fit.cov) - mvn_logpdf(
        values - out_fit.mean, lengths, out_fit.cov
    )


def resolve_model(
    mask: np.ndarray,
    is_member: np.ndarray,
    *,
    online: bool,
    covariance: str,
    pooled: bool,
    n_folds: int,
) -> tuple[str, bool]:
    """The ``(covariance, pooled)`` the data can support, warning when it differs from the request.

    Variable lengths turn full-row estimators into ``"ar1"``; fewer than
    :data:`MIN_CANARIES_PER_CLASS` canaries of a fitted class per training fold turn
    any correlated estimator into a pooled ``"ar1"`` (``"diagonal"`` stays diagonal,
    pooled).
    """
    covariance = estimator_for_lengths(covariance, mask)
    classes = (True, False) if online else (False,)
    per_fold = {}
    for label in classes:
        count = int(np.sum(is_member == label))
        per_fold[label] = count - int(np.ceil(count / n_folds))  # the smallest training fold
    fewest = min(per_fold.values())
    if fewest < MIN_CANARIES_PER_CLASS:
        fallback = "diagonal" if covariance == "diagonal" else "ar1"
        kind = "members" if per_fold.get(True, np.inf) == fewest else "non-members"
        warnings.warn(
            f"sequence LiRA: only {fewest} {kind} per training fold (fewer than {MIN_CANARIES_PER_CLASS}); "
            f"covariance={covariance!r} cannot be estimated reliably, using a "
            f"{'pooled ' if online else ''}{fallback!r} covariance instead. Use more canaries or fewer folds.",
            UserWarning,
            stacklevel=3,
        )
        return fallback, online
    return covariance, pooled


def sequence_lira_scores(
    values: np.ndarray,
    mask: np.ndarray,
    is_member: np.ndarray,
    *,
    online: bool = True,
    covariance: str = "ledoit_wolf",
    pooled: bool = False,
    shrink_gap: bool = True,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted sequence LiRA scores, ``[N]``, higher = member.

    Args:
        values: ``[N, T]`` per-token statistic, higher = better predicted
            (:func:`mia_guard.attacks.lira.statistic_matrix`).
        mask: bool ``[N, T]`` scored tokens, left-aligned (a prefix of each row).
        is_member: bool ``[N]`` membership labels.
        online: likelihood ratio of IN and OUT fits, or offline GLS shift from OUT.
        covariance: ``"ledoit_wolf"`` (default), ``"diagonal"``, ``"ar1"`` or ``"toeplitz"``.
        pooled: share one Σ between IN and OUT (online only).
        shrink_gap: shrink the per-position IN-OUT gap towards its mean (online only).
        n_folds, seed: cross-fitting folds and their seed.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    is_member = np.asarray(is_member, dtype=bool)
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
        raise ValueError("sequence LiRA needs left-aligned scored positions (each mask row a prefix)")
    width = int(lengths.max()) if len(lengths) else 0
    if width == 0:
        raise ValueError("sequence LiRA needs canaries with scored tokens; every mask row is empty")
    values, mask = values[:, :width], mask[:, :width]
    covariance, pooled = resolve_model(
        mask, is_member, online=online, covariance=covariance, pooled=pooled, n_folds=n_folds
    )
    return cross_fit(
        is_member,
        lambda train: fit_sequence_gaussians(
            values, mask, is_member, train, online=online, covariance=covariance, pooled=pooled, shrink_gap=shrink_gap
        ),
        lambda fits, test: score_sequence(fits, values[test], mask[test], online=online),
        n_folds=n_folds,
        seed=seed,
    )


# ---------------------------------------------------------------------- registered attacks
def _run(ctx: AttackContext, statistic: str, reference, **options) -> np.ndarray:
    values, mask = statistic_matrix(ctx.stats, statistic, reference)
    return sequence_lira_scores(values, mask, ctx.is_member, n_folds=ctx.n_folds, seed=ctx.seed, **options)


@register("seq_lira", supervised=True)
def seq_lira(
    ctx: AttackContext,
    statistic: str = "confidence",
    covariance: str = "ledoit_wolf",
    pooled: bool = False,
    shrink_gap: bool = True,
) -> np.ndarray:
    """Online sequence LiRA: IN/OUT multivariate Gaussians over per-token statistics (Ledoit–Wolf, cross-fitted)."""
    return _run(ctx, statistic, None, online=True, covariance=covariance, pooled=pooled, shrink_gap=shrink_gap)


@register("seq_lira_offline", supervised=True)
def seq_lira_offline(ctx: AttackContext, statistic: str = "confidence", covariance: str = "ledoit_wolf") -> np.ndarray:
    """Offline sequence LiRA: standardized GLS shift away from the non-member Gaussian (cross-fitted)."""
    return _run(ctx, statistic, None, online=False, covariance=covariance)


@register("seq_lira_diag", supervised=True)
def seq_lira_diag(ctx: AttackContext, statistic: str = "confidence") -> np.ndarray:
    """Online sequence LiRA assuming independent tokens (diagonal Σ): the baseline for seq_lira."""
    return _run(ctx, statistic, None, online=True, covariance="diagonal")


@register("seq_lira_ref", supervised=True, needs=["reference"])
def seq_lira_ref(
    ctx: AttackContext,
    statistic: str = "confidence",
    covariance: str = "ledoit_wolf",
    pooled: bool = False,
    shrink_gap: bool = True,
) -> np.ndarray:
    """Online sequence LiRA on per-token statistics minus the reference model's (cross-fitted)."""
    return _run(ctx, statistic, ctx.reference, online=True, covariance=covariance, pooled=pooled, shrink_gap=shrink_gap)
