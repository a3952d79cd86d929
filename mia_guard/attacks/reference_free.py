"""Reference-free scores (as in MIMIR) and the reference-calibrated loss difference.

All are computed over each canary's scored tokens (the secret for templated canaries)
and oriented so that higher = more likely a member.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .registry import AttackContext, register


def _lowest_k_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> np.ndarray:
    """Mean of the ``max(1, floor(k * len))`` smallest scored values per row, shape ``[N]``.

    ``floor`` is the published Min-K% definition (Shi et al. 2024; MIMIR keeps
    ``int(k * len)`` tokens); at least one token is kept, so a short secret with
    ``k * len < 1`` is scored by its least likely token instead of not at all.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    filled = torch.where(mask, values.double(), torch.full_like(values, float("inf"), dtype=torch.float64))
    ordered, _ = torch.sort(filled, dim=1)
    counts = torch.floor(mask.sum(dim=1).double() * k + 1e-9).clamp(min=1).long()
    keep = torch.arange(values.shape[1]).unsqueeze(0) < counts.unsqueeze(1)
    return (torch.where(keep, ordered, torch.zeros_like(ordered)).sum(dim=1) / counts).numpy()


@register("loss")
def loss(ctx: AttackContext) -> np.ndarray:
    """Negative mean token NLL (Yeom et al. 2018)."""
    return -ctx.stats.masked_mean("nll")


@register("zlib", needs=["texts"])
def zlib_ratio(ctx: AttackContext) -> np.ndarray:
    """Negative ratio of mean NLL to the zlib-compressed length of the canary text (Carlini et al. 2021)."""
    compressed = np.array([len(zlib.compress(t.encode("utf-8"))) for t in ctx.texts], dtype=np.float64)
    return -ctx.stats.masked_mean("nll") / compressed


@register("min_k")
def min_k(ctx: AttackContext, k: float = 0.2) -> np.ndarray:
    """Mean log-probability of the k% least likely scored tokens (Shi et al. 2024)."""
    return _lowest_k_mean(-ctx.stats.nll, ctx.stats.mask, k)


@register("min_k_plus_plus")
def min_k_plus_plus(ctx: AttackContext, k: float = 0.2) -> np.ndarray:
    """Min-K%++ (Zhang et al. 2024): mean of the k% lowest (log p(x_t) - mu_t) / sigma_t."""
    stats = ctx.stats
    z = (-stats.nll - stats.logp_mean) / stats.logp_std.clamp(min=1e-6)
    return _lowest_k_mean(z, stats.mask, k)


@register("reference", needs=["reference"])
def reference_loss_difference(ctx: AttackContext) -> np.ndarray:
    """Reference NLL minus audited-model NLL (mean over scored tokens; Carlini et al. 2021)."""
    return ctx.reference.masked_mean("nll") - ctx.stats.masked_mean("nll")
