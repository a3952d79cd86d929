"""Synthetic per-token statistics with known structure, for the LiRA tests."""

from __future__ import annotations

import numpy as np
import torch

from mia_guard.scoring.token_stats import TokenStats


def ar1_noise(rng: np.random.Generator, n: int, length: int, rho: float) -> np.ndarray:
    """``[n, length]`` stationary AR(1) noise with unit variance and lag-1 correlation ``rho``."""
    noise = np.empty((n, length))
    noise[:, 0] = rng.standard_normal(n)
    for t in range(1, length):
        noise[:, t] = rho * noise[:, t - 1] + np.sqrt(1.0 - rho**2) * rng.standard_normal(n)
    return noise


def random_split(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bool ``[n]`` with exactly half True, in random order."""
    is_member = np.zeros(n, dtype=bool)
    is_member[rng.permutation(n)[: n // 2]] = True
    return is_member


def token_stats(confidence: np.ndarray, lengths: np.ndarray | None = None) -> TokenStats:
    """TokenStats whose ``confidence`` is the given ``[N, T]`` array (NLL consistent with it).

    ``nll = -log sigmoid(confidence)``, i.e. the NLL of a token whose logit-scaled
    confidence is ``confidence``. ``lengths`` left-aligns variable-length rows.
    """
    conf = torch.tensor(confidence, dtype=torch.float32)
    n, width = conf.shape
    if lengths is None:
        mask = torch.ones(n, width, dtype=torch.bool)
    else:
        mask = torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]
    conf = conf * mask
    nll = torch.nn.functional.softplus(-conf) * mask
    zeros = torch.zeros_like(conf)
    return TokenStats(nll=nll, confidence=conf, entropy=zeros, logp_std=zeros + mask, top1=zeros, mask=mask)
