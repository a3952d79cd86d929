"""Univariate LiRA (Carlini et al. 2022) on one number per canary, and the statistic
both LiRA forms model.

The statistic (:func:`statistic_matrix`) is oriented so that **higher = better
predicted**, which for a trained-on canary means "more member-like":

- ``"confidence"`` (default): LiRA's logit-scaled confidence ``log p - log(1 - p)``
  of each scored token, whose distribution is close to Gaussian;
- ``"nll"``: the negated token NLL, ``log p``.

With ``reference`` (e.g. the step-0 or base model scoring the same canaries) the
statistic is the audited model's minus the reference's, cell by cell: what training
added on top of what any model of this kind predicts for that token.

Univariate LiRA reduces a canary to the mean of its statistic over its scored tokens
(:func:`canary_statistic`) and fits Gaussians across canaries. In one training run
the canaries of a template are exchangeable, so the member (IN) and non-member (OUT)
Gaussians are estimated across canaries ("global variance"):

- online:  ``log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out)`` (likelihood ratio);
- offline: only the OUT Gaussian, one-sided in the member direction:
  ``z = (s - mu_out) / sd_out``, or ``-log P(Z >= z)`` (same ranking, a p-value scale).

Both are cross-fitted over stratified canary folds: the IN fit sees only training-fold
members, the OUT fit only training-fold non-members, so no canary is scored by a fit
that used its own label (the offline form cross-fits its OUT fit as well). Per-canary
Gaussians from several training runs are in :mod:`mia_guard.attacks.multirun`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from ..scoring.token_stats import TokenStats
from .covariance import RELATIVE_VARIANCE_FLOOR
from .crossfit import cross_fit
from .registry import AttackContext, register

STATISTICS = ("confidence", "nll")
OFFLINE_OUTPUTS = ("z", "neg_log_sf")


def statistic_matrix(
    stats: TokenStats, statistic: str = "confidence", reference: TokenStats | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token LiRA statistic, higher = better predicted (see module docstring).

    Args:
        stats: the audited model's TokenStats ``[N, T]``.
        statistic: ``"confidence"`` or ``"nll"`` (used negated).
        reference: the same canaries under a reference model; if given, the result is
            ``stat(stats) - stat(reference)`` per cell.

    Returns:
        ``(values float64 [N, T], mask bool [N, T])``; padding cells hold 0.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown LiRA statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    mask = stats.mask.numpy()
    values = _oriented(stats, statistic)
    if reference is not None:
        if reference.mask.shape != stats.mask.shape or not np.array_equal(reference.mask.numpy(), mask):
            raise ValueError(
                "the reference TokenStats do not score the same canary positions as the audited "
                f"model (mask {tuple(reference.mask.shape)} vs {tuple(stats.mask.shape)}); score the "
                "same CanarySet with both models"
            )
        values = values - _oriented(reference, statistic)
    return np.where(mask, values, 0.0), mask


def _oriented(stats: TokenStats, statistic: str) -> np.ndarray:
    values = stats.field(statistic).double().numpy()
    return -values if statistic == "nll" else values


def canary_statistic(
    stats: TokenStats, statistic: str = "confidence", reference: TokenStats | None = None
) -> np.ndarray:
    """Mean of :func:`statistic_matrix` over each canary's scored tokens, shape ``[N]``."""
    values, mask = statistic_matrix(stats, statistic, reference)
    return values.sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


@dataclass(frozen=True)
class Gaussian1D:
    """A fitted normal distribution of the canary statistic."""

    mean: float
    std: float

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        return -0.5 * z**2 - np.log(self.std) - 0.5 * np.log(2.0 * np.pi)


def fit_class_gaussians(
    values: np.ndarray, is_member: np.ndarray, index: np.ndarray, *, online: bool = True
) -> dict[bool, Gaussian1D]:
    """Fit the OUT (and, if ``online``, IN) Gaussian on the canaries ``index``.

    A class with fewer than 2 canaries borrows the pooled within-class spread; when
    there is none at all, unit variance is used (with a warning).

    Returns:
        ``{False: out_fit}`` or ``{True: in_fit, False: out_fit}``.
    """
    index = index[np.isfinite(values[index])]
    labels = (True, False) if online else (False,)
    groups = {label: values[index[is_member[index] == label]] for label in labels}
    sq_dev = sum(float(np.sum((g - g.mean()) ** 2)) for g in groups.values() if len(g) >= 2)
    dof = sum(len(g) - 1 for g in groups.values() if len(g) >= 2)
    if dof == 0 or sq_dev <= 0.0:
        warnings.warn(
            "LiRA: no spread of the statistic within a class to fit a variance from (too few "
            "canaries, or a constant statistic); using unit variance",
            UserWarning,
            stacklevel=2,
        )
        pooled_var = 1.0
    else:
        pooled_var = sq_dev / dof
    fallback_mean = float(values[index].mean()) if len(index) else 0.0
    fits = {}
    for label, group in groups.items():
        var = float(np.var(group, ddof=1)) if len(group) >= 2 else pooled_var
        mean = float(group.mean()) if len(group) else fallback_mean
        fits[label] = Gaussian1D(mean, float(np.sqrt(max(var, RELATIVE_VARIANCE_FLOOR * pooled_var))))
    return fits


def score_with_gaussians(
    fits: dict[bool, Gaussian1D], values: np.ndarray, *, online: bool = True, output: str = "z"
) -> np.ndarray:
    """Online log-likelihood ratio, or the offline one-sided score (``output``), per value."""
    if online:
        return fits[True].logpdf(values) - fits[False].logpdf(values)
    z = (values - fits[False].mean) / fits[False].std
    return z if output == "z" else -log_ndtr(-z)


def lira_scores(
    values: np.ndarray,
    is_member: np.ndarray,
    *,
    online: bool = True,
    output: str = "z",
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted univariate LiRA scores, ``[N]``, higher = member.

    Args:
        values: ``[N]`` canary statistic (higher = better predicted).
        is_member: bool ``[N]`` membership labels.
        online: fit IN and OUT Gaussians (likelihood ratio) or only OUT (one-sided).
        output: offline score scale, ``"z"`` or ``"neg_log_sf"`` (``-log P(Z >= z)``).
        n_folds, seed: cross-fitting folds and their seed.
    """
    if output not in OFFLINE_OUTPUTS:
        raise ValueError(f"unknown offline LiRA output {output!r}; choose one of {', '.join(OFFLINE_OUTPUTS)}")
    values = np.asarray(values, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    return cross_fit(
        is_member,
        lambda train: fit_class_gaussians(values, is_member, train, online=online),
        lambda fits, test: score_with_gaussians(fits, values[test], online=online, output=output),
        n_folds=n_folds,
        seed=seed,
    )


@register("lira_online", supervised=True)
def lira_online(ctx: AttackContext, statistic: str = "confidence") -> np.ndarray:
    """Online univariate LiRA on the mean token statistic, IN/OUT Gaussians across canaries (cross-fitted)."""
    values = canary_statistic(ctx.stats, statistic)
    return lira_scores(values, ctx.is_member, online=True, n_folds=ctx.n_folds, seed=ctx.seed)


@register("lira_offline", supervised=True)
def lira_offline(ctx: AttackContext, statistic: str = "confidence", output: str = "z") -> np.ndarray:
    """Offline univariate LiRA: one-sided distance from the non-member Gaussian (cross-fitted)."""
    values = canary_statistic(ctx.stats, statistic)
    return lira_scores(values, ctx.is_member, online=False, output=output, n_folds=ctx.n_folds, seed=ctx.seed)


@register("lira_online_ref", supervised=True, needs=["reference"])
def lira_online_ref(ctx: AttackContext, statistic: str = "confidence") -> np.ndarray:
    """Online univariate LiRA on the statistic minus the reference model's (cross-fitted)."""
    values = canary_statistic(ctx.stats, statistic, ctx.reference)
    return lira_scores(values, ctx.is_member, online=True, n_folds=ctx.n_folds, seed=ctx.seed)
