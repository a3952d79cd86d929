"""mia_guard: training-time membership-inference audits for sequence models.

Public API (imported lazily, so ``import mia_guard`` stays cheap)::

    from mia_guard import CanarySet, Auditor
    canaries = CanarySet.generate(256, template="code_credential", seed=0)
    train_texts = canaries.insert_into(train_texts, repetitions=4)
    auditor = Auditor(canaries, tokenizer=tok)
    print(auditor.audit(model, step=1000).table())
"""

from __future__ import annotations

from . import _moved
from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "CanarySet": "mia_guard.canaries.canary_set",
    "Canary": "mia_guard.canaries.canary_set",
    "CanaryTemplate": "mia_guard.canaries.templates",
    "BUILTIN_TEMPLATES": "mia_guard.canaries.templates",
    "TokenStats": "mia_guard.scoring.token_stats",
    "score_tokens": "mia_guard.scoring.forward",
    "encode_canaries": "mia_guard.canaries.encoding",
    "Auditor": "mia_guard.audit.auditor",
    "AuditConfig": "mia_guard.audit.config",
    "AuditResult": "mia_guard.audit.result",
    "AuditHistory": "mia_guard.audit.result",
    "MIAAuditCallback": "mia_guard.callbacks.hf_trainer",
    "ReleasePolicy": "mia_guard.gate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
_moved.install()  # the 0.1 module paths keep working for one release
