"""Per-sample causal-LM loss, and the forward inputs per-sample gradients need.

DP-SGD clips each example's gradient, so the loss of example i must depend on example i
only. Hugging Face's own causal-LM loss averages over all tokens of the batch (each
example's weight depends on the others' lengths), so the DP trainer computes the loss
here instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def causal_lm_per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each row: logits [B, T, V], labels [B, T] -> [B] (float32).

    Position t's logits predict label t+1 (the shift Hugging Face models do internally);
    labels equal to -100 are ignored. A row's loss is the mean over its own scored tokens
    (0 for a row without any), so the batch loss ``mean_i loss_i`` matches the token mean
    when rows have equal length, and every row's gradient is its own.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T]")
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    scored = (shift_labels != IGNORE_INDEX).sum(dim=1)
    return token_nll.sum(dim=1) / scored.clamp(min=1)


def dp_forward_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` without ``labels``, with batched ``position_ids`` and ``use_cache=False`` where accepted.

    GPT-2-style models build ``position_ids`` of shape [1, T] when none are passed; the
    position embedding then sees one row, and Opacus' per-sample gradient for it fails.
    Passing ``arange(T)`` repeated to [B, T] (what the model uses for an unpadded
    training forward anyway) gives it one row per example. The KV cache is useless in
    training and would only hold memory.
    """
    accepted = inspect.signature(model.forward).parameters
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    ids = forward.get("input_ids")
    if "position_ids" in accepted and forward.get("position_ids") is None and isinstance(ids, torch.Tensor):
        rows, length = ids.shape[:2]
        forward["position_ids"] = torch.arange(length, device=ids.device).repeat(rows, 1)
    if "use_cache" in accepted:
        forward["use_cache"] = False
    return forward

