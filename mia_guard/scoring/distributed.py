"""Distributed audits: every process scores its shard of the canaries, rank 0 evaluates.

Under DDP or FSDP (launched with ``torchrun`` or ``accelerate launch``) every process
holds the model, so the canaries are split across processes instead of each process
scoring all of them:

1. **Shard** (:func:`shard_rows`): canaries sorted by token count and dealt round robin,
   so every shard has about the same number of tokens.
2. **Equal forward passes** (:func:`score_shard`): every shard is padded to
   ``ceil(N / world_size)`` rows by repeating one of its canaries, and every process uses
   the same batch size, so all processes run the same number of forward batches. FSDP
   gathers the sharded parameters inside each forward pass and needs every process in
   each one; DDP does not, but the padding costs at most one batch.
3. **Gather** (:func:`gather_stats`): each process packs its statistics into one float32
   tensor ``[6, ceil(N / world_size), T]`` (the five ``STAT_FIELDS`` and the mask; ``T``
   the widest canary of the whole set) and all-gathers it; rank 0 puts the rows back in
   canary order and drops the padding rows. The result has exactly the layout of a
   single-process :func:`~mia_guard.scoring.forward.score_tokens` call.
4. **Evaluate once**: rank 0 runs the attacks and metrics; the caller broadcasts the
   result and the gate decision (:meth:`ProcessGroup.broadcast_json`), so every process
   records the same figures and takes the same decision (stop or go on).

Collectives use the default ``torch.distributed`` process group, on CPU for gloo and on
the current accelerator otherwise (NCCL). Every function here that takes a
:class:`ProcessGroup` is a collective: all processes must call it, in the same order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..canaries.encoding import EncodedCanaries
from . import forward
from .forward import score_tokens
from .token_stats import STAT_FIELDS, TokenStats


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the default ``torch.distributed`` group (see :func:`current_group`).

    Attributes:
        rank: global rank of this process (rank 0 evaluates and is the broadcast source).
        world_size: number of processes (> 1).
        device: where collective tensors live: CPU for gloo, the current accelerator for NCCL.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process (all-reduce max)."""
        import torch.distributed as dist

        value = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_json(self, obj: Any = None) -> Any:
        """Rank 0's JSON-able ``obj`` on every process (other ranks' ``obj`` is ignored).

        Sent as UTF-8 JSON bytes (NaN and infinities kept), never pickled.
        """
        import torch.distributed as dist

        payload = json.dumps(obj, default=_json_default).encode("utf-8") if self.is_root else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_root:
            buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(buffer, src=0)
        return json.loads(bytes(buffer.cpu().numpy()).decode("utf-8"))

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every process's ``tensor`` (same shape and dtype on all), in rank order, on CPU."""
        import torch.distributed as dist

        local = tensor.to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return [p.cpu() for p in parts]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot broadcast a {type(value).__name__} as JSON")


def current_group() -> ProcessGroup | None:
    """The default process group when ``torch.distributed`` is initialized with more than
    one process, else ``None`` (a single-process audit)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), _collective_device(str(dist.get_backend())))


def _collective_device(backend: str) -> torch.device:
    if "gloo" in backend or "mpi" in backend:
        return torch.device("cpu")
    accelerator = torch.accelerator.current_accelerator()
    if accelerator is None:
        return torch.device("cpu")
    return torch.device(accelerator.type, torch.accelerator.current_device_index())


# ---------------------------------------------------------------------------- sharding
def shard_rows(lengths: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Canary indices per rank: sorted by token count, dealt round robin (rank ``r`` gets
    every ``world_size``-th canary from the ``r``-th shortest). Sizes differ by at most one;
    a shard is empty when there are fewer canaries than processes."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [np.sort(order[r::world_size]) for r in range(world_size)]


def default_batch_size(encoded: EncodedCanaries, device: Any = None, model: Any = None) -> int:
    """The batch size :func:`~mia_guard.scoring.forward.score_tokens` picks for the whole canary set
    on ``device`` (default: where ``model``'s parameters are; see
    :func:`~mia_guard.scoring.forward.default_batch_size`).

    A distributed audit passes it explicitly, so processes whose shards have different
    longest canaries still run the same number of batches.
    """
    if device is None and isinstance(model, torch.nn.Module):
        device = next((p.device for p in model.parameters()), None)
    return forward.default_batch_size(encoded, torch.device(device) if device is not None else None)


def subset_encoded(encoded: EncodedCanaries, rows: np.ndarray) -> EncodedCanaries:
    """The canaries ``rows`` (repeats allowed) of ``encoded``, in that order."""
    rows = np.asarray(rows, dtype=np.int64)
    return EncodedCanaries([encoded.input_ids[i] for i in rows], encoded.start[rows], encoded.end[rows])


def score_shard(
    model: Any,
    encoded: EncodedCanaries,
    batch_size: int,
    group: ProcessGroup | None,
    *,
    chunk_size: int | None = None,
    device: Any = None,
    progress: bool = False,
) -> TokenStats:
    """This process's share of the scoring.

    Without a group: every canary, in canary order. With one: this rank's shard padded
    to ``ceil(N / world_size)`` rows (see the module docstring); pass the result to
    :func:`gather_stats`. Not a collective itself, but under FSDP the model's forward
    passes are, so every process must call it with the same ``batch_size``.
    """
    options = dict(batch_size=batch_size, chunk_size=chunk_size, device=device, progress=progress)
    if group is None:
        return score_tokens(model, encoded, **options)
    shards = shard_rows(encoded.lengths, group.world_size)
    size = max(len(s) for s in shards)
    mine = shards[group.rank]
    filler = mine[0] if len(mine) else 0  # a dummy row only keeps the forward passes in step
    rows = np.concatenate([mine, np.full(size - len(mine), filler, dtype=np.int64)])
    return score_tokens(model, subset_encoded(encoded, rows), **options)


def gather_stats(local: TokenStats, encoded: EncodedCanaries, group: ProcessGroup) -> TokenStats | None:
    """All processes' :func:`score_shard` results as one TokenStats in canary order, on
    rank 0 (``None`` on the other ranks). A collective."""
    width = int(encoded.num_scored.max())
    gathered = group.all_gather(_pack(local, width))
    if not group.is_root:
        return None
    shards = shard_rows(encoded.lengths, group.world_size)
    packed = torch.empty(len(STAT_FIELDS) + 1, len(encoded), width)
    for part, rows in zip(gathered, shards):
        packed[:, torch.as_tensor(rows)] = part[:, : len(rows)]
    return _unpack(packed)


def _pack(stats: TokenStats, width: int) -> torch.Tensor:
    """``[len(STAT_FIELDS) + 1, N, width]`` float32: the statistics, then the mask as 0/1."""
    pad = width - stats.num_positions
    planes = [stats.field(name).float() for name in STAT_FIELDS] + [stats.mask.float()]
    return torch.nn.functional.pad(torch.stack(planes), (0, pad))


def _unpack(packed: torch.Tensor) -> TokenStats:
    fields = {name: packed[i].contiguous() for i, name in enumerate(STAT_FIELDS)}
    return TokenStats(**fields, mask=packed[len(STAT_FIELDS)] > 0.5)


# ---------------------------------------------------------------------------- sharded models
def is_sharded(model: Any) -> bool:
    """Whether ``model`` is an FSDP module (``FullyShardedDataParallel`` or ``fully_shard``):
    its forward gathers parameters from every process."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(model, (FSDPModule, FullyShardedDataParallel))


class ShardedForward(torch.nn.Module):
    """Runs an FSDP-sharded causal LM as a whole: ``forward(input_ids, attention_mask)``
    calls ``model(input_ids=..., attention_mask=...)``.

    :func:`~mia_guard.scoring.forward.score_tokens` treats it as a plain callable, so it runs the
    full model in each forward pass (FSDP gathers the parameters there) rather than the
    base model and the output head separately, and sets eval mode on every wrapped module.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        inner = getattr(model, "module", model)  # FullyShardedDataParallel wraps; fully_shard does not
        self.config = getattr(model, "config", None) or getattr(inner, "config", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def for_scoring(model: Any) -> Any:
    """``model`` as :func:`score_shard` should run it: FSDP modules wrapped in
    :class:`ShardedForward`, anything else unchanged (unwrap DDP before calling this)."""
    return ShardedForward(model) if is_sharded(model) else model
