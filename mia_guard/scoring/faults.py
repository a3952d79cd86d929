"""Faults an audit must survive without disturbing training.

- :func:`retry_on_oom`: run the scoring at a batch size and, when it runs out of
  memory, halve the batch size and run it again (down to 1). The batch sizes that
  failed are returned so the audit can say so; :class:`AuditOutOfMemoryError` is raised
  only when even one canary per batch does not fit, and the caller skips that audit.
- :func:`check_writable`: create the output directories and write, sync and delete a
  probe file in each, so a read-only or full disk is reported before training starts
  rather than at the first audit hours later.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import torch

T = TypeVar("T")

#: Bytes written by the writability probe (one filesystem block or so: a full disk refuses it).
PROBE_BYTES = 4096


class AuditOutOfMemoryError(RuntimeError):
    """Scoring ran out of memory at every batch size down to 1 (``batch_sizes`` lists those tried)."""

    def __init__(self, batch_sizes: list[int]) -> None:
        self.batch_sizes = list(batch_sizes)
        super().__init__(
            f"scoring the canaries ran out of memory at batch sizes {self.batch_sizes}; this audit is skipped. "
            "Free memory for the audit (smaller training batch, fewer or shorter canaries, a GPU with more "
            "memory) or audit offline from a checkpoint with `mia-guard audit`"
        )


class OutputDirectoryError(OSError):
    """An output directory cannot be created or written (read-only, missing permission, disk full)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an accelerator or host out-of-memory error raised by torch."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def retry_on_oom(
    run: Callable[[int], T],
    batch_size: int,
    *,
    agree: Callable[[bool], bool] | None = None,
) -> tuple[T, int, list[int]]:
    """``run(batch_size)``, halving ``batch_size`` after each out-of-memory error.

    Args:
        run: the work, e.g. scoring the canaries at a given batch size.
        batch_size: the first batch size to try (>= 1).
        agree: in a distributed audit, maps "this process ran out of memory" to "some
            process did" (an all-reduce), so every process retries together and all run
            the same number of forward passes. ``None`` for one process.

    Returns:
        ``(result, batch size that worked, batch sizes that ran out of memory)``.

    Raises:
        AuditOutOfMemoryError: batch size 1 ran out of memory too.
        Any other exception of ``run`` unchanged.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    failed: list[int] = []
    while True:
        result, out_of_memory = None, False
        try:
            result = run(batch_size)
        except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(err):
                raise
            out_of_memory = True
        if out_of_memory:  # outside the handler: the traceback no longer holds the failed batch
            _release_cached_memory()
        if agree is not None:
            out_of_memory = agree(out_of_memory)
        if not out_of_memory:
            return result, batch_size, failed
        failed.append(batch_size)
        if batch_size == 1:
            raise AuditOutOfMemoryError(failed)
        batch_size //= 2


def _release_cached_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def check_writable(directories: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """Create each directory and write, sync and remove a probe file in it.

    Args:
        directories: ``(what, path)`` pairs; ``what`` names the directory in the error
            (e.g. ``"audit output_dir"``).

    Raises:
        OutputDirectoryError: with the directory, the reason (``errno`` text) and what to do.
    """
    for what, directory in directories:
        directory = Path(directory)
        probe = directory / f".mia_guard_write_probe.{os.getpid()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as handle:
                handle.write(b"\0" * PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            hint = (
                "free disk space"
                if err.errno in (errno.ENOSPC, errno.EDQUOT)
                else "make it writable or choose another directory"
            )
            raise OutputDirectoryError(
                err.errno,
                f"mia_guard cannot write to its {what} {directory}: {err.strerror or err}; {hint} "
                "before training starts (audits write there throughout the run)",
            ) from err
        finally:
            if probe.exists():
                probe.unlink()
