"""Where audit figures go while training runs: TensorBoard event files and a JSONL log.

Every sink implements :class:`~mia_guard.callbacks.sinks.base.Sink` (start, write each
audit with its gate decision, finish, close) and reads results and decisions only; the
scalar figures and their names are the same in each (:mod:`.scalars`).
"""

from __future__ import annotations

from ..._lazy import lazy_exports

_EXPORTS = {
    "Sink": "mia_guard.callbacks.sinks.base",
    "audit_scalars": "mia_guard.callbacks.sinks.scalars",
    "fpr_label": "mia_guard.callbacks.sinks.scalars",
    "PRIVACY_SCALARS": "mia_guard.callbacks.sinks.scalars",
    "TensorBoardSink": "mia_guard.callbacks.sinks.tensorboard",
    "EVENT_FILE_SUFFIX": "mia_guard.callbacks.sinks.tensorboard",
    "custom_scalar_layout": "mia_guard.callbacks.sinks.tensorboard",
    "decision_markdown": "mia_guard.callbacks.sinks.tensorboard",
    "JsonlSink": "mia_guard.callbacks.sinks.jsonl",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
