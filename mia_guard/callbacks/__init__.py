"""Training-loop integrations: ``MIAAuditCallback`` (Hugging Face ``Trainer``) and
``AuditLoop`` (plain PyTorch / Accelerate loops). Imported lazily, so
``import mia_guard.callbacks`` does not import transformers."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "MIAAuditCallback": "mia_guard.callbacks.hf_trainer",
    "AuditSession": "mia_guard.callbacks.session",
    "AuditLoop": "mia_guard.callbacks.loop",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
