"""The analysis registry: figure groups an Auditor computes after the attacks.

An analysis is ``fn(AnalysisInput) -> JSON-able dict``, registered by name with
:func:`register_analysis`; the Auditor stores its output in ``AuditResult.extras[name]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..canaries.canary_set import CanarySet
from ..scoring.token_stats import TokenStats

#: name -> fn(AnalysisInput) -> JSON-able dict, stored in ``AuditResult.extras[name]``.
ANALYSES: dict[str, Callable[["AnalysisInput"], dict]] = {}


@dataclass(frozen=True)
class AnalysisInput:
    """What an analysis (a figure group beyond per-attack metrics, e.g. privacy bounds) reads.

    ``scores`` hold one array per attack over *all* canaries (NaN where ``valid`` is False).
    """

    stats: TokenStats
    scores: Mapping[str, np.ndarray]
    metrics: Mapping[str, Any]
    is_member: np.ndarray
    valid: np.ndarray
    canaries: CanarySet
    step: int
    confidence: float
    options: Mapping[str, Any]
    seed: int


def register_analysis(name: str) -> Callable:
    """Decorator: register ``fn(AnalysisInput) -> dict`` as an analysis the Auditor can run."""

    def decorator(fn: Callable[[AnalysisInput], dict]) -> Callable[[AnalysisInput], dict]:
        ANALYSES[name] = fn
        return fn

    return decorator


#: Modules whose import registers the built-in analyses (optional ones may be absent).
BUILTIN_ANALYSIS_MODULES: tuple[str, ...] = (
    "mia_guard.analyses.privacy",
    "mia_guard.analyses.images",
    "mia_guard.analyses.profile",
)


def load_builtin_analyses() -> None:
    for module in BUILTIN_ANALYSIS_MODULES:
        importlib.import_module(module)
