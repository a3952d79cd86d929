"""Training-loop integrations: ``MIAAuditCallback`` (Hugging Face ``Trainer``) and
``AuditLoop`` (plain PyTorch / Accelerate loops). Imported lazily, so
``import mia_guard.callbacks`` does not import transformers."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MIAAuditCallback": "mia_guard.callbacks.hf_trainer",
    "AuditSession": "mia_guard.callbacks.session",
    "AuditLoop": "mia_guard.callbacks.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mia_guard.callbacks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
