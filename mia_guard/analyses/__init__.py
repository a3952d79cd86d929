"""Analyses: figure groups beyond per-attack metrics (privacy bounds, leakage profile,
image bits/dim) that read one audit's statistics and scores, plus secret extraction
(docs/architecture.md). ``available()`` lists them, ``register_analysis(name)`` adds one."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "AnalysisInput": "mia_guard.analyses.registry",
    "available": "mia_guard.analyses.registry",
    "get": "mia_guard.analyses.registry",
    "register_analysis": "mia_guard.analyses.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
