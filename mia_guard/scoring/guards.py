"""Guards that keep an audit from changing training.

:func:`unwrap_model` finds the module that holds the weights below DDP / DataParallel,
Opacus, PEFT and ``torch.compile`` wrappers; :func:`opacus_hooks_disabled` turns off
per-sample-gradient hooks while the audit's forward pass runs (those of Opacus wrappers
and those attached in place, :data:`ATTACHED_HOOKS`); :func:`preserved_rng` saves and
restores every random number generator around it.
"""

from __future__ import annotations

import contextlib
import random
import weakref
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


#: Per-sample-gradient hooks attached to a model in place (no wrapper module), by model:
#: objects with ``disable_hooks()``, ``enable_hooks()`` and ``hooks_enabled`` (Opacus'
#: ``GradSampleHooks``). Whoever attaches such hooks registers them here, e.g. mia_guard's
#: ``DPTrainer`` (:func:`mia_guard.defenses.dp.model.attach_grad_sample_hooks`), so that
#: :func:`opacus_hooks_disabled` finds them without the audit importing the defenses.
#: Weak keys: a dropped model frees its entry.
ATTACHED_HOOKS: weakref.WeakKeyDictionary[torch.nn.Module, Any] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def opacus_hooks_disabled(model: Any) -> Iterator[Any]:
    """Turn off the per-sample-gradient hooks around ``model``, then restore them; yields the
    unwrapped model (:func:`unwrap_model`).

    Covers every Opacus wrapper (``GradSampleModule``) in the wrapper chain and hooks
    attached in place to any module of the chain (:data:`ATTACHED_HOOKS`). Opacus' hooks
    already skip eval-mode and ``torch.no_grad`` forwards; switching them off also covers
    a grad-enabled train-mode forward, which would otherwise store activations that the
    next backward picks up. Hooks that were off stay off.
    """
    chain = wrapper_chain(model)
    switches = [m for m in chain if _is_opacus_wrapper(m)] + [ATTACHED_HOOKS[m] for m in chain if m in ATTACHED_HOOKS]
    states = [(switch, bool(getattr(switch, "hooks_enabled", True))) for switch in switches]
    for switch, _ in states:
        switch.disable_hooks()
    try:
        yield chain[-1]
    finally:
        for switch, enabled in states:
            if enabled:
                switch.enable_hooks()


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
