"""Canaries: the set and its membership split, templates, token encoding, insertion into
training data, and images as canaries (docs/architecture.md). Loading or generating a
CanarySet imports no torch; inserting into torch datasets does."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Canary": "mia_guard.canaries.canary_set",
    "CanarySet": "mia_guard.canaries.canary_set",
    "CanaryTemplate": "mia_guard.canaries.templates",
    "BUILTIN_TEMPLATES": "mia_guard.canaries.templates",
    "EncodedCanaries": "mia_guard.canaries.encoding",
    "encode_canaries": "mia_guard.canaries.encoding",
    "insert_canaries": "mia_guard.canaries.insertion",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
