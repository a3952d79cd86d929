"""Reference-calibrated sequence LiRA: the seed method on per-token statistics given a reference model.

When the step-0 model is a pretrained LM (fine-tuning, DESIGN.md "The real workload"),
it already predicts each canary token well or badly before training: that per-example,
per-token difficulty is the largest nuisance of a membership test, and it is free. This
attack keeps, per canary, the vector of the audited model's per-token statistic
``s = (s_1..s_T)`` and the reference model's ``r = (r_1..r_T)`` on the same tokens
(:func:`mia_guard.attacks.lira.statistic_matrix`, higher = better predicted), and models
the change ``d = s - r`` *given* ``r`` with a Gaussian per class::

    d | r, class c  ~  N( mu_c + A_c (r - mu_r),  Σ_c )
    score(x) = log N(d; ·, Σ_in | r) - log N(d; ·, Σ_out | r)        (higher = member)

``A`` is the regression of the change on the reference statistic (a token the base model
already predicts well has less room to improve), ``Σ`` the conditional covariance of the
changes across positions (correlated BPE tokens are not independent evidence), and
``mu_in - mu_out`` the per-position member gap (shrunk towards its mean over positions as
in :func:`mia_guard.attacks.sequence_lira.shrink_to_mean`). ``mu_c`` is class ``c``'s mean
change *at the common reference mean*: each class mean is moved along ``A`` by its own
reference mean's distance from the common one, as ANCOVA adjusts group means. The two
classes' reference means differ by chance, and without the adjustment ``A`` times that
difference would enter the gap as noise (most where the base model predicts the canaries
badly, so that ``A`` is far from 0; docs/real_model.md). ``A = 0`` is plain
subtraction of the reference (``seq_lira_ref``). The reference statistic does not depend
on membership (the reference model never saw the canaries), so conditioning on it
costs nothing and the marginal of ``r`` cancels from the likelihood ratio.

Estimation, per cross-fitting fold on the training folds only
(:func:`~mia_guard.attacks.crossfit.cross_fit`): the joint covariance of ``(d, r)``
(``2T`` columns, within-class residuals) by Ledoit–Wolf on standardized columns (the
shrinkage target is then the identity correlation, which pulls ``A`` towards 0, i.e.
towards plain subtraction, and ``Σ`` towards independent tokens), then
``A = C_dr C_rr⁻¹`` and ``Σ = C_dd - A C_rd``. ``pooled=True`` (default) shares ``A``
and ``Σ`` between members and non-members (a linear score, half the parameters);
``pooled=False`` fits them per class ("separate", the seed's online form).
``calibration="diagonal"`` (each token's change on its own reference statistic only) and
``"difference"`` (``A = 0``) were weaker on SmolLM2 (docs/real_model.md) and are kept as
options for comparison.

Needs token-aligned canaries (every canary the same ``T`` scored positions; see
:mod:`mia_guard.canaries.token_alignment`); with variable lengths it falls back, with a
warning, to ``A = 0`` and the AR(1) covariance of ``seq_lira_ref``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scipy.linalg import solve_triangular
from sklearn.covariance import ledoit_wolf

from .covariance import robust_cholesky
from .crossfit import cross_fit
from .lira import statistic_matrix
from .registry import AttackContext, register
from .sequence_lira import MIN_CANARIES_PER_CLASS, sequence_lira_scores, shrink_to_mean

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ConditionalGaussian:
    """``d | r ~ N(mean + slope (r - ref_mean), cov)`` over ``T`` positions.

    Attributes:
        mean: ``[T]`` mean change at the reference mean.
        ref_mean: ``[T]`` mean reference statistic.
        slope: ``[T, T]`` regression ``A`` of the change on the reference statistic.
        cov: ``[T, T]`` conditional covariance ``Σ``.
    """

    mean: np.ndarray
    ref_mean: np.ndarray
    slope: np.ndarray
    cov: np.ndarray

    def logpdf(self, change: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """``log N(change; mean + slope (reference - ref_mean), cov)`` per row, ``[n]``."""
        residual = change - self.mean - (reference - self.ref_mean) @ self.slope.T
        chol = robust_cholesky(self.cov)
        whitened = solve_triangular(chol, residual.T, lower=True)
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        return -0.5 * (np.sum(whitened**2, axis=0) + log_det + residual.shape[1] * _LOG_2PI)


def joint_covariance(residuals: np.ndarray) -> np.ndarray:
    """Ledoit–Wolf covariance of ``residuals`` ``[n, p]`` (already centered), shrunk on standardized columns."""
    scale = np.sqrt(np.maximum(np.mean(residuals**2, axis=0), 1e-12))
    corr, _ = ledoit_wolf(residuals / scale, assume_centered=True)
    return corr * np.outer(scale, scale)


def condition(joint: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, Σ)`` of the first ``width`` columns given the rest, from a joint covariance ``[2T, 2T]``."""
    c_dd, c_dr, c_rr = joint[:width, :width], joint[:width, width:], joint[width:, width:]
    slope = np.linalg.solve(c_rr, c_dr.T).T
    cov = c_dd - slope @ c_dr.T
    return slope, (cov + cov.T) / 2.0


#: How the change is calibrated on the reference statistic (the slope ``A``).
CALIBRATIONS = ("full", "diagonal", "difference")


def slope_and_covariance(
    change_res: np.ndarray, ref_res: np.ndarray, calibration: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(A [W, T], Σ [W, W])`` from within-class residuals of the change ``[n, W]`` and reference ``[n, T]``.

    ``"full"``: conditional of the joint standardized Ledoit–Wolf covariance (every
    position's change on every reference position, shrunk towards ``A = 0``);
    ``"diagonal"``: least-squares slope of each change cell on the reference
    statistic of its own token (unshrunk, one number per cell), then Ledoit–Wolf on
    what is left; ``"difference"``: ``A = 0``.
    """
    width, tokens = change_res.shape[1], ref_res.shape[1]
    if calibration == "full":
        return condition(joint_covariance(np.hstack([change_res, ref_res])), width)
    if calibration == "difference":
        return np.zeros((width, tokens)), joint_covariance(change_res)
    if calibration != "diagonal":
        raise ValueError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATIONS)}")
    own = np.tile(ref_res, (1, width // tokens))  # each change cell's own token's reference statistic
    coef = np.sum(change_res * own, axis=0) / np.maximum(np.sum(own**2, axis=0), 1e-12)
    slope = np.zeros((width, tokens))
    slope[np.arange(width), np.arange(width) % tokens] = coef
    return slope, joint_covariance(change_res - own * coef)


def fit_conditional_gaussians(
    change: np.ndarray,
    reference: np.ndarray,
    is_member: np.ndarray,
    index: np.ndarray,
    *,
    pooled: bool = True,
    shrink_gap: bool = True,
    calibration: str = "full",
) -> dict[bool, ConditionalGaussian]:
    """IN and OUT conditional Gaussians fitted on canaries ``index`` only.

    Args:
        change: ``[N, W]`` audited statistic minus reference statistic (``W`` a multiple of
            ``T``: this audit's changes, after those of earlier audits if any).
        reference: ``[N, T]`` reference statistic.
        is_member: bool ``[N]`` (only ``index``'s labels are read).
        pooled: one ``A`` and ``Σ`` for both classes (within-class residuals).
        shrink_gap: shrink the per-position gap ``mu_in - mu_out`` towards its mean.
        calibration: the slope ``A`` (:func:`slope_and_covariance`).
    """
    rows = {label: index[is_member[index] == label] for label in (True, False)}
    ref_mean = reference[index].mean(axis=0)
    means = {label: change[r].mean(axis=0) for label, r in rows.items()}
    change_res = {label: change[r] - means[label] for label, r in rows.items()}
    ref_res = {label: reference[r] - reference[r].mean(axis=0) for label, r in rows.items()}
    if pooled:
        shared = slope_and_covariance(np.vstack(list(change_res.values())), np.vstack(list(ref_res.values())),
                                      calibration)
        fits = {True: shared, False: shared}
    else:
        fits = {label: slope_and_covariance(change_res[label], ref_res[label], calibration) for label in rows}
    # Each class's mean change at the common reference mean (covariance-adjusted, as in ANCOVA):
    # the classes' reference means differ by chance, and A times that difference is no member gap.
    means = {label: means[label] - (reference[r].mean(axis=0) - ref_mean) @ fits[label][0].T
             for label, r in rows.items()}
    if shrink_gap:
        noise = sum(np.diag(fits[label][1]) / max(len(rows[label]), 1) for label in (True, False))
        means[True] = means[False] + shrink_to_mean(means[True] - means[False], noise)
    return {
        label: ConditionalGaussian(means[label], ref_mean, fits[label][0], fits[label][1]) for label in (True, False)
    }


def reference_calibrated_scores(
    values: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    is_member: np.ndarray,
    *,
    earlier: Sequence[np.ndarray] = (),
    pooled: bool = True,
    shrink_gap: bool = True,
    calibration: str = "full",
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted reference-calibrated sequence LiRA scores, ``[N]``, higher = member.

    Args:
        values: ``[N, T]`` audited model's per-token statistic (higher = better predicted).
        reference: ``[N, T]`` the reference model's statistic on the same tokens.
        mask: bool ``[N, T]`` scored tokens (left-aligned).
        is_member: bool ``[N]`` labels.
        earlier: ``[N, T]`` statistics of the same model at earlier audits; their changes
            are stacked before this audit's (a ``T x (1 + len(earlier))`` vector per canary:
            a member seen early in a single pass may show more then than at the end).
        pooled, shrink_gap, calibration: see :func:`fit_conditional_gaussians`.
        n_folds, seed: cross-fitting folds and their seed.
    """
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    is_member = np.asarray(is_member, dtype=bool)
    lengths = mask.sum(axis=1)
    width = int(lengths.max()) if len(lengths) else 0
    if width == 0:
        raise ValueError("reference-calibrated LiRA needs canaries with scored tokens; every mask row is empty")
    change = np.where(mask, values - reference, 0.0)
    if not (lengths == width).all():
        warnings.warn(
            f"reference-calibrated LiRA: canaries score {int(lengths.min())}-{width} tokens, so positions do not "
            "line up; using the reference difference with an AR(1) covariance instead (token-align the canaries: "
            "CanarySet.generate(..., tokenizer=...) or from_texts(..., window_tokens=...))",
            UserWarning,
            stacklevel=2,
        )
        return sequence_lira_scores(change, mask, is_member, covariance="ar1", pooled=pooled, shrink_gap=shrink_gap,
                                    n_folds=n_folds, seed=seed)
    fewest = min(int(is_member.sum()), int((~is_member).sum()))
    fewest -= int(np.ceil(fewest / n_folds))
    if fewest < MIN_CANARIES_PER_CLASS:
        raise ValueError(
            f"reference-calibrated LiRA needs at least {MIN_CANARIES_PER_CLASS} members and non-members per "
            f"training fold, got {fewest}; use more canaries or fewer folds"
        )
    reference = np.where(mask, reference, 0.0)
    stacked = [np.asarray(e, dtype=np.float64) - reference for e in earlier]
    change = np.hstack([c[:, :width] for c in stacked] + [change[:, :width]])
    reference = reference[:, :width]
    return cross_fit(
        is_member,
        lambda train: fit_conditional_gaussians(
            change, reference, is_member, train, pooled=pooled, shrink_gap=shrink_gap, calibration=calibration
        ),
        lambda fits, test: fits[True].logpdf(change[test], reference[test])
        - fits[False].logpdf(change[test], reference[test]),
        n_folds=n_folds,
        seed=seed,
    )


def _run(ctx: AttackContext, statistic: str, history_audits: int = 0, **options) -> np.ndarray:
    values, mask = statistic_matrix(ctx.stats, statistic)
    reference, reference_mask = statistic_matrix(ctx.reference, statistic)
    if not np.array_equal(mask, reference_mask):
        raise ValueError(
            "the reference TokenStats do not score the same canary positions as the audited model; "
            "score the same CanarySet with both models"
        )
    if np.array_equal(values, reference):
        raise ValueError("the audited model is the reference (the step-0 audit): there is no change to calibrate yet")
    earlier = []
    for past in list(ctx.history)[::-1]:
        if len(earlier) == history_audits:
            break
        past_values, past_mask = statistic_matrix(past, statistic)
        if np.array_equal(past_mask, mask) and not np.array_equal(past_values, reference):  # not the reference itself
            earlier.insert(0, past_values)
    return reference_calibrated_scores(values, reference, mask, ctx.is_member, earlier=earlier, n_folds=ctx.n_folds,
                                       seed=ctx.seed, **options)


@register("seq_lira_refcal", supervised=True, needs=["reference"])
def seq_lira_refcal(
    ctx: AttackContext, statistic: str = "confidence", pooled: bool = True, shrink_gap: bool = True,
    calibration: str = "full",
) -> np.ndarray:
    """Sequence LiRA on per-token changes given the reference model's statistics (the seed method when fine-tuning)."""
    return _run(ctx, statistic, pooled=pooled, shrink_gap=shrink_gap, calibration=calibration)


@register("seq_lira_refcal_history", supervised=True, needs=["reference", "history"])
def seq_lira_refcal_history(
    ctx: AttackContext, statistic: str = "confidence", history_audits: int = 1, pooled: bool = True,
    shrink_gap: bool = True,
) -> np.ndarray:
    """Reference-calibrated sequence LiRA on the changes at this and the last ``history_audits`` earlier audits."""
    return _run(ctx, statistic, history_audits=history_audits, pooled=pooled, shrink_gap=shrink_gap)


@register("seq_lira_refcal_separate", supervised=True, needs=["reference"])
def seq_lira_refcal_separate(ctx: AttackContext, statistic: str = "confidence", shrink_gap: bool = True) -> np.ndarray:
    """Reference-calibrated sequence LiRA with separate member and non-member covariances (the seed's online form)."""
    return _run(ctx, statistic, pooled=False, shrink_gap=shrink_gap)
