"""The analysis registry: figure groups an Auditor computes after the attacks.

An analysis is ``fn(AnalysisInput) -> JSON-able dict``, registered by name with
:func:`register_analysis`; the Auditor stores its output in ``AuditResult.extras[name]``.
Analyses are plug-ins of a :class:`~mia_guard.plugins.Registry` (:data:`ANALYSES`), the
same mechanism as attacks: the built-ins (:data:`BUILTIN_ANALYSES`) are imported on first
use, other packages register theirs with :func:`register_analysis` or an entry point in
the ``mia_guard.analyses`` group. This module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ..plugins import Registry

if TYPE_CHECKING:
    from ..canaries.canary_set import CanarySet
    from ..scoring.token_stats import TokenStats

AnalysisFn = Callable[["AnalysisInput"], dict]


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


#: The built-in analyses and the module whose import registers each (loaded on first use).
BUILTIN_ANALYSES: dict[str, str] = {
    "privacy": "mia_guard.analyses.privacy",
    "image": "mia_guard.analyses.images",
    "profile": "mia_guard.analyses.profile",
}

#: Every analysis by name: registered here, built in, or from the ``mia_guard.analyses`` entry-point group.
ANALYSES: Registry[AnalysisFn] = Registry("analysis", "mia_guard.analyses", BUILTIN_ANALYSES)


def register_analysis(name: str, *, overwrite: bool = False) -> Callable[[AnalysisFn], AnalysisFn]:
    """Decorator: register ``fn(AnalysisInput) -> dict`` as analysis ``name`` (a taken name needs ``overwrite=True``)."""

    def decorator(fn: AnalysisFn) -> AnalysisFn:
        ANALYSES.add(name, fn, overwrite=overwrite)
        return fn

    return decorator


def get(name: str) -> AnalysisFn:
    """The analysis called ``name`` (its module is imported on first use).

    Raises:
        mia_guard.plugins.UnknownNameError: no such analysis (the message lists the available ones).
    """
    return ANALYSES.get(name)


def available() -> list[str]:
    """Names of all available analyses, sorted (imports none of them)."""
    return ANALYSES.names()
