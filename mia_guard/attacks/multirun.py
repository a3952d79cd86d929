"""LiRA from several training runs: per-canary IN/OUT means (classic LiRA, Carlini et al. 2022).

Given ``K`` reference runs that scored the *same* canaries, each with its own random
membership split, canary ``i``'s member mean comes from the runs where ``i`` was
inserted and its non-member mean from the runs where it was not. Per-canary means
remove what a single run cannot: canary-specific offsets (some secrets are simply
easier to predict), which a single run's across-canary fit must treat as noise.

- :func:`multi_run_sequence_lira`: per-canary mean vectors and one covariance pooled
  over all (run, canary) residuals from their own canary-and-class mean; online
  ``log N(s; mu_in_i, Σ) - log N(s; mu_out_i, Σ)`` or offline GLS shift from
  ``mu_out_i`` (see :mod:`mia_guard.attacks.sequence_lira`).
- :func:`multi_run_lira`: the univariate counterpart on the mean token statistic,
  with a global (per-class) or per-example variance.

With few runs per canary, the estimated gap ``mu_in_i - mu_out_i`` is noisy, and in
the multivariate score Σ⁻¹ amplifies that noise along the low-variance directions.
Online scores therefore shrink each canary's gap towards the average gap over
canaries, per position, by the empirical-Bayes (James–Stein) factor
``tau² / (tau² + v_i)``: ``v_i`` is the gap's estimation variance
(``σ² (1/n_in_i + 1/n_out_i)``), ``tau²`` the between-canary variance of the true gaps
(observed gap variance minus the mean ``v_i``, floored at 0). When canaries gain
alike from training the gaps collapse to the shared one; when they differ, and
with many runs, each canary keeps its own. ``shrink_gap=False`` gives classic LiRA.

The target run (whose canaries are being scored) must not be among the reference runs,
or its own outcome would be part of the fit; an identical run is rejected.

A canary that was a member (or non-member) in no reference run gets, for that class,
its other class mean plus the average gap between the class means over all canaries
(the global class mean carried over to this canary's own level); a warning says how
many canaries this affected.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy.special import log_ndtr

from ..scoring.token_stats import TokenStats
from .covariance import (
    FULL_ROW_ESTIMATORS,
    RELATIVE_VARIANCE_FLOOR,
    estimator_for_lengths,
    fit_covariance,
    pooled_residuals,
)
from .lira import OFFLINE_OUTPUTS, statistic_matrix
from .sequence_lira import MIN_CANARIES_PER_CLASS, gls_shift, mvn_logpdf, shrink_to_mean

ReferenceRuns = Sequence[tuple[TokenStats, np.ndarray]]
VARIANCES = ("global", "per_example")


def _stack_runs(
    reference_runs: ReferenceRuns, target_stats: TokenStats, statistic: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(values [K, N, T], labels bool [K, N], target [N, T], mask [N, T])`` after validation."""
    if len(reference_runs) == 0:
        raise ValueError("multi-run LiRA needs at least one reference run")
    target, mask = statistic_matrix(target_stats, statistic)
    values, labels = [], []
    for k, (stats, is_member) in enumerate(reference_runs):
        is_member = np.asarray(is_member, dtype=bool)
        if is_member.shape != (target_stats.num_canaries,):
            raise ValueError(
                f"reference run {k}: is_member has shape {is_member.shape}, expected ({target_stats.num_canaries},)"
            )
        run_values, run_mask = statistic_matrix(stats, statistic)
        if run_mask.shape != mask.shape or not np.array_equal(run_mask, mask):
            raise ValueError(
                f"reference run {k} does not score the same canary positions as the target run "
                f"(mask {run_mask.shape} vs {mask.shape}); every run must score the same CanarySet"
            )
        if np.array_equal(run_values, target):
            raise ValueError(
                f"reference run {k} has exactly the target run's statistics; leave the target run out "
                "of the reference runs (its own membership would be fitted)"
            )
        values.append(run_values)
        labels.append(is_member)
    return np.stack(values), np.stack(labels), target, mask


def _canary_class_means(values: np.ndarray, labels: np.ndarray, classes: tuple[bool, ...]) -> dict[bool, np.ndarray]:
    """Per-canary mean ``[N, T]`` of each class over the runs where the canary had that label."""
    means, counts, overall = {}, {}, {}
    for label in (True, False):
        hits = (labels == label)[:, :, None]
        counts[label] = hits[:, :, 0].sum(axis=0)
        if counts[label].sum() == 0:
            if label in classes:
                kind = "a member" if label else "a non-member"
                raise ValueError(f"no canary was {kind} in any reference run; check the membership labels")
            continue
        means[label] = np.where(hits, values, 0.0).sum(axis=0) / np.maximum(counts[label], 1)[:, None]
        overall[label] = np.where(hits, values, 0.0).sum(axis=(0, 1)) / counts[label].sum()
    for label in classes:
        missing = counts[label] == 0
        if missing.any():
            kind = "members" if label else "non-members"
            warnings.warn(
                f"multi-run LiRA: {int(missing.sum())} canaries were {kind} in none of the "
                f"{values.shape[0]} reference runs; their {kind[:-1]} mean is estimated as their other "
                "class mean plus the average gap between the classes. Use more reference runs.",
                UserWarning,
                stacklevel=3,
            )
            other = not label
            means[label][missing] = means[other][missing] + (overall[label] - overall[other])
    return {label: means[label] for label in classes}


def _shrunk_gap(means: dict[bool, np.ndarray], labels: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Each canary's IN-OUT gap ``[N, T]`` shrunk towards the mean gap over canaries (module docstring).

    Args:
        means: per-canary class means ``{True: [N, T], False: [N, T]}``.
        labels: bool ``[K, N]`` membership in each reference run.
        variance: ``[T]`` per-position variance of one run's statistic around its class mean.
    """
    n_in, n_out = labels.sum(axis=0), (~labels).sum(axis=0)
    noise = variance[None, :] * (1.0 / np.maximum(n_in, 1) + 1.0 / np.maximum(n_out, 1))[:, None]
    return shrink_to_mean(means[True] - means[False], noise, (n_in > 0) & (n_out > 0))


def _residual_rows(
    values: np.ndarray, labels: np.ndarray, mask: np.ndarray, classes: tuple[bool, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled within-(canary, class) residuals of the runs whose label is in ``classes``."""
    num_runs, num_canaries = labels.shape
    selected = np.isin(labels, classes)
    groups = np.arange(num_canaries)[None, :] * 2 + labels.astype(np.int64)
    full_mask = np.broadcast_to(mask, values.shape)
    return pooled_residuals(values[selected], full_mask[selected], groups[selected])


def multi_run_sequence_lira(
    reference_runs: ReferenceRuns,
    target_stats: TokenStats,
    *,
    statistic: str = "confidence",
    covariance: str = "ledoit_wolf",
    online: bool = True,
    shrink_gap: bool = True,
) -> np.ndarray:
    """Sequence LiRA scores of the target run's canaries from per-canary means of K runs.

    Args:
        reference_runs: ``(TokenStats, is_member bool [N])`` per reference run, all
            scoring the same N canaries as the target; the target run excluded.
        target_stats: the audited run's TokenStats ``[N, T]``.
        statistic: ``"confidence"`` or ``"nll"`` (see :func:`mia_guard.attacks.lira.statistic_matrix`).
        covariance: estimator for the pooled Σ (``"ledoit_wolf"``, ``"diagonal"``,
            ``"ar1"``, ``"toeplitz"``); variable lengths switch full-row estimators to ``"ar1"``.
        online: likelihood ratio of per-canary IN and OUT Gaussians, or offline GLS
            shift from the OUT mean (then only the runs where a canary was OUT are used).
        shrink_gap: shrink each canary's IN-OUT gap towards the average one (online
            only; see the module docstring). ``False`` = classic per-canary means.

    Returns:
        ``[N]`` scores, higher = member.
    """
    values, labels, target, mask = _stack_runs(reference_runs, target_stats, statistic)
    classes = (True, False) if online else (False,)
    means = _canary_class_means(values, labels, classes)
    residuals, residual_mask = _residual_rows(values, labels, mask, classes)
    method = estimator_for_lengths(covariance, mask)
    if method in FULL_ROW_ESTIMATORS and residuals.shape[0] < MIN_CANARIES_PER_CLASS:
        warnings.warn(
            f"multi-run sequence LiRA: only {residuals.shape[0]} (run, canary) residuals carry spread "
            f"information (canaries need >= 2 runs in a class); using an 'ar1' covariance instead of {method!r}",
            UserWarning,
            stacklevel=2,
        )
        method = "ar1"
    cov = fit_covariance(residuals, residual_mask, method)
    lengths = mask.sum(axis=1)
    if not online:
        return gls_shift(target - means[False], lengths, cov)
    mean_in = means[True]
    if shrink_gap:
        mean_in = means[False] + _shrunk_gap(means, labels, np.diag(cov.matrix(mask.shape[1])))
    return mvn_logpdf(target - mean_in, lengths, cov) - mvn_logpdf(target - means[False], lengths, cov)


def multi_run_lira(
    reference_runs: ReferenceRuns,
    target_stats: TokenStats,
    *,
    statistic: str = "confidence",
    variance: str = "global",
    online: bool = True,
    output: str = "z",
    shrink_gap: bool = True,
) -> np.ndarray:
    """Univariate LiRA of the target run's canaries from per-canary means of K runs.

    The canary statistic is the mean over scored tokens
    (:func:`mia_guard.attacks.lira.canary_statistic`).

    Args:
        reference_runs, target_stats, statistic, online, shrink_gap: as in
            :func:`multi_run_sequence_lira`.
        variance: ``"global"`` (one std per class, pooled over canaries; robust with few
            runs) or ``"per_example"`` (each canary's own std per class, from its runs;
            canaries with fewer than 2 runs in a class use the global one).
        output: offline score scale, ``"z"`` or ``"neg_log_sf"``.

    Returns:
        ``[N]`` scores, higher = member.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown LiRA variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    if output not in OFFLINE_OUTPUTS:
        raise ValueError(f"unknown offline LiRA output {output!r}; choose one of {', '.join(OFFLINE_OUTPUTS)}")
    values, labels, target, mask = _stack_runs(reference_runs, target_stats, statistic)
    lengths = np.maximum(mask.sum(axis=1), 1)
    values = (values.sum(axis=2) / lengths)[:, :, None]
    target = target.sum(axis=1) / lengths
    classes = (True, False) if online else (False,)
    means = _canary_class_means(values, labels, classes)
    stds = {label: _class_std(values[:, :, 0], labels, label, means[label][:, 0], variance) for label in classes}
    z_out = (target - means[False][:, 0]) / stds[False]
    if not online:
        return z_out if output == "z" else -log_ndtr(-z_out)
    mean_in = means[True][:, 0]
    if shrink_gap:
        global_var = np.array([np.mean(stds[True] ** 2 + stds[False] ** 2) / 2.0])
        mean_in = means[False][:, 0] + _shrunk_gap(means, labels, global_var)[:, 0]
    z_in = (target - mean_in) / stds[True]
    return -0.5 * (z_in**2 - z_out**2) - np.log(stds[True]) + np.log(stds[False])


def _class_std(values: np.ndarray, labels: np.ndarray, label: bool, means: np.ndarray, variance: str) -> np.ndarray:
    """Std ``[N]`` of one class: global (pooled over canaries) or per canary where it has >= 2 runs."""
    hits = labels == label
    counts = hits.sum(axis=0)
    sq_dev = np.where(hits, (values - means) ** 2, 0.0).sum(axis=0)
    dof = np.maximum(counts - 1, 0)
    if dof.sum() == 0 or sq_dev.sum() <= 0.0:
        kind = "members" if label else "non-members"
        warnings.warn(
            f"multi-run LiRA: no canary has two reference runs as {kind} with different statistics; "
            "using unit variance. Use more reference runs.",
            UserWarning,
            stacklevel=3,
        )
        global_var = 1.0
    else:
        global_var = sq_dev.sum() / dof.sum()
    var = np.full(len(counts), global_var)
    if variance == "per_example":
        own = counts >= 2
        var[own] = sq_dev[own] / dof[own]
    return np.sqrt(np.maximum(var, RELATIVE_VARIANCE_FLOOR * global_var))
