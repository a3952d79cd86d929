"""Sequence LiRA variants: pooled covariance, and per-token calibration by token identity.

What limits sequence LiRA on random-secret canaries (benchmarks/attack_power.py,
docs/attack_power.md): on the demo's tiny byte-level GPT-2 the per-token confidences
of a canary are nearly uncorrelated (|lag-1..3 correlation| < 0.03) and, up to 4
insertions, the member/non-member gap is about the same at every secret position, so
a Gaussian over the vector has nothing to weight and the score is the loss test again.
What *does* vary is the model's preference for each symbol of the secret's alphabet:
after ``API_SECRET_KEY = "`` it predicts some characters more than others, and that
preference explains about three quarters of the variance of a non-member's per-token
confidence. It is the same for members and non-members, so for the membership test it
is pure noise.

Token calibration removes it. Each scored cell gets a *key*, the identity of its token
(:func:`token_keys`), and its statistic becomes

    r_it = s_it - m(key_it)

where ``m(k)`` is the mean statistic of non-member cells holding token ``k``, pooled
over positions and shrunk towards the average over tokens by its sampling noise
(empirical Bayes, :func:`~mia_guard.attacks.sequence_lira.shrink_to_mean`). The key
means are fitted inside the cross-fitting, on the training folds' non-members only,
together with the Gaussians, so no canary's score depends on its own label. This is
difficulty calibration (Watson et al. 2022) at the token level, with the held-out
canaries as the reference population instead of a reference model.

Token identities: TokenStats do not carry token ids, so they are read from the canary
texts. Canaries must be one template (a prefix shared by all canaries, a varying
middle, an optional shared suffix) whose varying middle is scored one token per UTF-8
byte (a byte-level tokenizer such as the demo's) or per character; :func:`token_keys`
checks this and raises ``ValueError`` otherwise (the Auditor then lists the attack as
skipped, with the reason).

Registered attacks (all supervised, cross-fitted):

- ``seq_lira_pooled``: online sequence LiRA with one Ledoit–Wolf Σ shared by members
  and non-members (a linear score; half the parameters of ``seq_lira``).
- ``seq_lira_tokencal``: ``seq_lira_pooled`` on token-calibrated statistics.
- ``lira_tokencal``: univariate online LiRA on the canary mean of the token-calibrated
  statistic, the univariate baseline of ``seq_lira_tokencal``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .crossfit import cross_fit
from .lira import fit_class_gaussians, score_with_gaussians, statistic_matrix
from .registry import AttackContext, register
from .sequence_lira import fit_sequence_gaussians, resolve_model, score_sequence, sequence_lira_scores, shrink_to_mean


# ---------------------------------------------------------------------------- token identities
def token_keys(texts: Sequence[str], mask: np.ndarray) -> np.ndarray:
    """The token identity of every scored cell, int ``[N, T]`` (``-1`` on padding).

    The canaries' varying middle (each text without the prefix and suffix shared by all
    texts) must have exactly as many UTF-8 bytes, or else characters, as the canary has
    scored tokens; cell ``j`` then holds the ``j``-th byte (character) of the middle,
    numbered ``0..K-1`` over the distinct values.

    Args:
        texts: the ``N`` canary texts.
        mask: bool ``[N, T]`` left-aligned scored cells.

    Raises:
        ValueError: fewer than 2 texts, no shared prefix, or a middle whose length does
            not match the scored tokens (the tokenizer is not byte/character-level on
            the secret).
    """
    mask = np.asarray(mask, dtype=bool)
    if len(texts) != mask.shape[0]:
        raise ValueError(f"got {len(texts)} canary texts for {mask.shape[0]} rows of statistics")
    if len(texts) < 2:
        raise ValueError("token calibration needs at least 2 canaries")
    prefix = os.path.commonprefix(list(texts))
    suffix = os.path.commonprefix([t[len(prefix):][::-1] for t in texts])[::-1]
    if not prefix:
        raise ValueError(
            "token calibration needs canaries of one template (a prefix shared by every canary, then the "
            "scored secret); these canary texts share no prefix"
        )
    middles = [t[len(prefix) : len(t) - len(suffix)] for t in texts]
    lengths = mask.sum(axis=1)
    for encode, unit in ((lambda s: list(s.encode("utf-8")), "byte"), (list, "character")):
        units = [encode(m) for m in middles]
        if all(len(u) == n for u, n in zip(units, lengths)):
            values = sorted({v for u in units for v in u})
            index = {v: k for k, v in enumerate(values)}
            keys = np.full(mask.shape, -1, dtype=np.int64)
            for row, u in enumerate(units):
                keys[row, : len(u)] = [index[v] for v in u]
            return keys
    first = next(i for i, (m, n) in enumerate(zip(middles, lengths)) if len(m.encode("utf-8")) != n)
    raise ValueError(
        "token calibration needs one scored token per byte or character of each canary's secret: canary "
        f"{first} has {int(lengths[first])} scored tokens for the {len(middles[first])}-character varying part "
        f"{middles[first][:40]!r}. Use a byte- or character-level tokenizer, or an attack without token calibration"
    )


def key_means(values: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean statistic per token key over the cells of ``rows``, shrunk towards the average key mean, ``[K]``.

    A key seen ``n`` times has sampling variance ``σ²/n`` (``σ²`` the within-key
    variance); :func:`~mia_guard.attacks.sequence_lira.shrink_to_mean` pulls each mean
    towards the average of the key means by that noise, so rare keys move most. Keys
    never seen in ``rows`` get the average.

    Args:
        values: ``[N, T]`` statistic.
        keys: int ``[N, T]`` token keys (``-1`` = padding, ignored).
        rows: canary indices to average over.
    """
    cell_keys, cell_values = keys[rows].ravel(), values[rows].ravel()
    observed_cells = cell_keys >= 0
    cell_keys, cell_values = cell_keys[observed_cells], cell_values[observed_cells]
    counts = np.bincount(cell_keys, minlength=int(keys.max()) + 1)
    means = np.bincount(cell_keys, cell_values, minlength=len(counts)) / np.maximum(counts, 1)
    seen = counts > 0
    within = np.sum((cell_values - means[cell_keys]) ** 2) / max(len(cell_values) - int(seen.sum()), 1)
    return shrink_to_mean(means, within / np.maximum(counts, 1), seen)


def calibrate(values: np.ndarray, keys: np.ndarray, means: np.ndarray) -> np.ndarray:
    """``values`` minus the mean of each cell's token key, ``[N, T]``; padding stays 0."""
    return np.where(keys >= 0, values - means[np.maximum(keys, 0)], 0.0)


# ---------------------------------------------------------------------------- scores
def token_calibrated_scores(
    values: np.ndarray,
    mask: np.ndarray,
    keys: np.ndarray,
    is_member: np.ndarray,
    *,
    sequence: bool = True,
    covariance: str = "ledoit_wolf",
    pooled: bool = True,
    shrink_gap: bool = True,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted LiRA scores on token-calibrated statistics, ``[N]``, higher = member.

    In each fold the key means come from the training folds' non-members only; then
    either online sequence LiRA (``sequence=True``; ``covariance``, ``pooled``,
    ``shrink_gap`` as in :func:`~mia_guard.attacks.sequence_lira.sequence_lira_scores`)
    or univariate online LiRA on the canary mean is fitted on the training folds.

    Args:
        values, mask: ``[N, T]`` statistic (higher = better predicted) and scored cells.
        keys: int ``[N, T]`` token keys (:func:`token_keys`).
        is_member: bool ``[N]`` labels.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    is_member = np.asarray(is_member, dtype=bool)
    lengths = np.maximum(mask.sum(axis=1), 1)
    if sequence:
        covariance, pooled = resolve_model(
            mask, is_member, online=True, covariance=covariance, pooled=pooled, n_folds=n_folds
        )

    def fit(train: np.ndarray):
        means = key_means(values, keys, train[~is_member[train]])
        residuals = calibrate(values, keys, means)
        if sequence:
            fits = fit_sequence_gaussians(
                residuals, mask, is_member, train, covariance=covariance, pooled=pooled, shrink_gap=shrink_gap
            )
        else:
            fits = fit_class_gaussians(residuals.sum(axis=1) / lengths, is_member, train)
        return means, fits

    def score(model, test: np.ndarray) -> np.ndarray:
        means, fits = model
        residuals = calibrate(values[test], keys[test], means)
        if sequence:
            return score_sequence(fits, residuals, mask[test])
        return score_with_gaussians(fits, residuals.sum(axis=1) / lengths[test])

    return cross_fit(is_member, fit, score, n_folds=n_folds, seed=seed)


def _calibrated(ctx: AttackContext, statistic: str, sequence: bool, **options) -> np.ndarray:
    values, mask = statistic_matrix(ctx.stats, statistic)
    keys = token_keys(ctx.texts, mask)
    return token_calibrated_scores(
        values, mask, keys, ctx.is_member, sequence=sequence, n_folds=ctx.n_folds, seed=ctx.seed, **options
    )


# ---------------------------------------------------------------------------- registered attacks
@register("seq_lira_pooled", supervised=True)
def seq_lira_pooled(
    ctx: AttackContext, statistic: str = "confidence", covariance: str = "ledoit_wolf", shrink_gap: bool = True
) -> np.ndarray:
    """Online sequence LiRA with one covariance shared by members and non-members (cross-fitted)."""
    values, mask = statistic_matrix(ctx.stats, statistic)
    return sequence_lira_scores(
        values, mask, ctx.is_member, covariance=covariance, pooled=True, shrink_gap=shrink_gap,
        n_folds=ctx.n_folds, seed=ctx.seed,
    )


@register("seq_lira_tokencal", supervised=True, needs=["texts"])
def seq_lira_tokencal(
    ctx: AttackContext,
    statistic: str = "confidence",
    covariance: str = "ledoit_wolf",
    pooled: bool = True,
    shrink_gap: bool = True,
) -> np.ndarray:
    """Sequence LiRA on per-token statistics minus the non-member mean of the same token (cross-fitted)."""
    return _calibrated(ctx, statistic, True, covariance=covariance, pooled=pooled, shrink_gap=shrink_gap)


@register("lira_tokencal", supervised=True, needs=["texts"])
def lira_tokencal(ctx: AttackContext, statistic: str = "confidence") -> np.ndarray:
    """Univariate LiRA on the mean per-token statistic minus the non-member mean of the same token (cross-fitted)."""
    return _calibrated(ctx, statistic, False)
