"""Poisson sampling of logical batches, delivered to the Trainer as gradient-accumulation micro-batches.

DP-SGD's accountant assumes every example joins each logical batch independently with
probability q. The Trainer accumulates ``gradient_accumulation_steps`` (k) micro-batches
per optimizer step, so one Poisson logical batch is handed out as exactly k consecutive
micro-batches: the Trainer's step boundary is then the logical-batch boundary, and the
noise is added once per logical batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Sampler


@dataclass(frozen=True)
class SamplingPlan:
    """Batch geometry of a DP run.

    Attributes:
        dataset_size: N, training examples.
        physical_batch_size: B, the most rows one forward/backward pass processes
            (``per_device_train_batch_size``).
        accumulation_steps: k, micro-batches per optimizer step (``gradient_accumulation_steps``).
    """

    dataset_size: int
    physical_batch_size: int
    accumulation_steps: int

    def __post_init__(self) -> None:
        if self.physical_batch_size < 1 or self.accumulation_steps < 1:
            raise ValueError(
                f"batch size and gradient accumulation steps must be >= 1, got "
                f"{self.physical_batch_size} and {self.accumulation_steps}"
            )
        if self.logical_batch_size > self.dataset_size:
            raise ValueError(
                f"the logical batch per_device_train_batch_size × gradient_accumulation_steps = "
                f"{self.physical_batch_size} × {self.accumulation_steps} = {self.logical_batch_size} exceeds the "
                f"{self.dataset_size} training examples; DP-SGD needs a sample rate below 1: use smaller batches"
            )

    @property
    def logical_batch_size(self) -> int:
        """L = B · k: the expected number of examples per noisy step (Opacus' ``expected_batch_size``)."""
        return self.physical_batch_size * self.accumulation_steps

    @property
    def sample_rate(self) -> float:
        """q = L / N, the probability that an example joins a given logical batch."""
        return self.logical_batch_size / self.dataset_size

    @property
    def poisson_steps_per_epoch(self) -> int:
        """⌊N / L⌋ logical batches make one epoch of Poisson sampling (Opacus' ``1/q`` convention)."""
        return self.dataset_size // self.logical_batch_size


class PoissonMicroBatchSampler(Sampler[list[int]]):
    """Batch sampler: ``steps`` Poisson logical batches, each yielded as ``micro_batches`` index lists.

    Each logical batch draws every index independently with probability ``sample_rate``
    (so it may be empty or larger than expected). Its L indices are split into
    ``micro_batches`` consecutive lists of ⌊L/k⌋ or ⌈L/k⌉ indices, the longer ones last:
    the last micro-batch is empty only when the whole logical batch is.
    ``len()`` = ``steps · micro_batches``. Iterating again draws new batches from the
    same generator.
    """

    def __init__(
        self,
        num_samples: int,
        sample_rate: float,
        micro_batches: int,
        steps: int,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
        if num_samples < 1 or micro_batches < 1 or steps < 1:
            raise ValueError(
                f"num_samples, micro_batches and steps must be >= 1, got {num_samples}, {micro_batches}, {steps}"
            )
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.micro_batches = micro_batches
        self.steps = steps
        self.generator = generator

    def __len__(self) -> int:
        return self.steps * self.micro_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            chosen = torch.rand(self.num_samples, generator=self.generator) < self.sample_rate
            yield from split_evenly(chosen.nonzero().flatten().tolist(), self.micro_batches)


def split_evenly(indices: list[int], parts: int) -> list[list[int]]:
    """``parts`` consecutive slices of ``indices`` whose lengths differ by at most one, shorter first."""
    short, extra = divmod(len(indices), parts)
    sizes = [short] * (parts - extra) + [short + 1] * extra
    out, start = [], 0
    for size in sizes:
        out.append(indices[start : start + size])
        start += size
    return out


class EmptyBatchSafeCollator:
    """Wraps a collator so an empty index list gives a batch with 0 rows instead of an error.

    Collators index their first example; Poisson sampling can draw none. The empty batch
    is the collation of ``dataset[0]`` with every tensor cut to 0 rows, so it has the keys,
    dtypes and trailing shape of a real batch.
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any], dataset: Sequence[Any]) -> None:
        self.collate_fn = collate_fn
        self.dataset = dataset

    def __call__(self, examples: list[Any]) -> Any:
        if len(examples) > 0:
            return self.collate_fn(examples)
        return slice_rows(self.collate_fn([self.dataset[0]]), 0, 0)


def batch_rows(batch: Mapping[str, Any]) -> int:
    """Number of rows (examples) in a collated batch: the first dimension of its first tensor."""
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError(f"the batch has no tensor with a batch dimension (keys: {sorted(batch)})")


def slice_rows(batch: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of every batched tensor; other values are passed through."""
    return {
        key: value[start:stop] if isinstance(value, torch.Tensor) and value.dim() > 0 else value
        for key, value in batch.items()
    }
