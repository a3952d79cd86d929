"""Guards that keep an audit from changing training.

:func:`unwrap_model` finds the module that holds the weights below DDP / DataParallel,
Opacus, PEFT and ``torch.compile`` wrappers; :func:`opacus_hooks_disabled` turns off
per-sample-gradient hooks while the audit's forward pass runs; :func:`preserved_rng`
saves and restores every random number generator around it.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


def wrapper_chain(model: Any) -> list[Any]:
    """``[model, inner, ...]`` down through DDP / DataParallel, Opacus, PEFT and ``torch.compile`` wrappers."""
    chain = [model]
    for _ in range(16):  # wrappers nest a few levels at most
        current = chain[-1]
        if isinstance(current, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            chain.append(current.module)
        elif _is_opacus_wrapper(current):
            chain.append(current._module)
        elif _is_peft_wrapper(current):  # the LoRA/adapter layers live inside the base model
            chain.append(current.get_base_model())
        elif isinstance(getattr(current, "_orig_mod", None), torch.nn.Module):
            chain.append(current._orig_mod)
        else:
            return chain
    raise ValueError(f"could not unwrap {type(model).__name__}: more than 16 nested wrappers")


def unwrap_model(model: Any) -> Any:
    """The module that holds the weights, below every training wrapper (see :func:`wrapper_chain`)."""
    return wrapper_chain(model)[-1]


def _is_peft_wrapper(model: Any) -> bool:
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


def _is_opacus_wrapper(model: Any) -> bool:
    return isinstance(getattr(model, "_module", None), torch.nn.Module) and hasattr(model, "disable_hooks")


@contextlib.contextmanager
def opacus_hooks_disabled(model: Any) -> Iterator[None]:
    """Turn off Opacus per-sample-gradient hooks of every wrapper around ``model``, then restore them."""
    wrappers = [(m, bool(getattr(m, "hooks_enabled", True))) for m in wrapper_chain(model) if _is_opacus_wrapper(m)]
    for wrapper, _ in wrappers:
        wrapper.disable_hooks()
    try:
        yield
    finally:
        for wrapper, enabled in wrappers:
            if enabled:
                wrapper.enable_hooks()


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Save and restore the Python, NumPy and torch (CPU and initialized CUDA) RNG states."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
