"""Scoring: one chunked forward pass from a model and encoded canaries to
:class:`TokenStats`, sharded over the processes of a distributed run, with
out-of-memory retry (docs/architecture.md)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "TokenStats": "mia_guard.scoring.token_stats",
    "STAT_FIELDS": "mia_guard.scoring.token_stats",
    "score_tokens": "mia_guard.scoring.forward",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
