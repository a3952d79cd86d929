"""TokenStats: the per-canary, per-scored-position statistics every attack reads.

Layout: each field is a CPU tensor of shape ``[N, T]`` (N canaries, T = the largest
number of scored positions of any canary). Row ``i`` holds canary ``i``'s scored
positions *left-aligned*: column ``j`` is the ``j``-th scored token of that canary,
and ``mask[i, j]`` says whether that cell is real (``True``) or padding (``False``).
For templated canaries the scored tokens are the secret's tokens, so column ``j``
means "the j-th secret token" in every canary of the template, which is the
alignment the sequence attacks rely on. Padding cells hold 0.

Sign conventions (per scored token x_t with model distribution p = p(. | x_<t)):

- ``nll``          = -log p(x_t)                    (>= 0; lower = better predicted)
- ``confidence``   = log p(x_t) - log(1 - p(x_t))  (LiRA's logit-scaled confidence; higher = better predicted)
- ``entropy``      = -sum_v p(v) log p(v)           (>= 0)
- ``logp_std``     = std_{v ~ p}[log p(v)]           (Min-K%++'s sigma; its mu is ``-entropy``)
- ``top1``         = 1.0 when x_t is the argmax of p, else 0.0
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .._io import decode_array, encode_array

STAT_FIELDS = ("nll", "confidence", "entropy", "logp_std", "top1")


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics of N canaries under one model (see module docstring)."""

    nll: torch.Tensor
    confidence: torch.Tensor
    entropy: torch.Tensor
    logp_std: torch.Tensor
    top1: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        shape = self.mask.shape
        if self.mask.dim() != 2 or self.mask.dtype != torch.bool:
            raise ValueError(f"TokenStats.mask must be a bool [N, T] tensor, got {self.mask.dtype} {tuple(shape)}")
        for name in STAT_FIELDS:
            value = getattr(self, name)
            if value.shape != shape:
                raise ValueError(f"TokenStats.{name} has shape {tuple(value.shape)}, mask has {tuple(shape)}")

    # ------------------------------------------------------------------ shape helpers
    @property
    def num_canaries(self) -> int:
        return int(self.mask.shape[0])

    @property
    def num_positions(self) -> int:
        return int(self.mask.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """Number of scored tokens per canary, shape ``[N]`` (int64)."""
        return self.mask.sum(dim=1)

    @property
    def logp_mean(self) -> torch.Tensor:
        """E_{v~p}[log p(v)] per position (Min-K%++'s mu); equals ``-entropy``."""
        return -self.entropy

    def field(self, name: str) -> torch.Tensor:
        """One statistic by name (one of ``STAT_FIELDS``), shape ``[N, T]``."""
        if name not in STAT_FIELDS:
            raise KeyError(f"unknown token statistic {name!r}; choose one of {', '.join(STAT_FIELDS)}")
        return getattr(self, name)

    def masked_mean(self, name: str) -> np.ndarray:
        """Mean of one statistic over each canary's scored tokens, shape ``[N]`` float64."""
        value = self.field(name).double() * self.mask
        return (value.sum(dim=1) / self.lengths.clamp(min=1)).numpy()

    # ------------------------------------------------------------------ transforms
    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> "TokenStats":
        """The statistics of the canaries selected by ``index`` (int indices or bool mask)."""
        index = torch.as_tensor(np.asarray(index))
        return TokenStats(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def nonfinite_canaries(self) -> np.ndarray:
        """Bool ``[N]``: canaries with a NaN/inf statistic in a scored cell."""
        bad = torch.zeros(self.num_canaries, dtype=torch.bool)
        for name in STAT_FIELDS:
            bad |= (~torch.isfinite(self.field(name)) & self.mask).any(dim=1)
        return bad.numpy()

    @staticmethod
    def concat(parts: list["TokenStats"]) -> "TokenStats":
        """Stack the rows of several TokenStats (padding T to the widest)."""
        if not parts:
            raise ValueError("TokenStats.concat needs at least one part")
        width = max(p.num_positions for p in parts)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]))

        return TokenStats(**{f.name: torch.cat([pad(getattr(p, f.name)) for p in parts]) for f in fields(TokenStats)})

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict:
        """JSON-able form: float32 fields and the bool mask as base64 arrays (compact, exact)."""
        out = {name: encode_array(getattr(self, name).numpy().astype(np.float32)) for name in STAT_FIELDS}
        out["mask"] = encode_array(self.mask.numpy())
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TokenStats":
        try:
            arrays = {name: torch.from_numpy(decode_array(data[name])) for name in (*STAT_FIELDS, "mask")}
        except KeyError as err:
            raise ValueError(f"TokenStats record is missing field {err}") from err
        arrays["mask"] = arrays["mask"].bool()
        return cls(**arrays)
