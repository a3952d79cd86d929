"""The audit: :class:`AuditConfig` (every option, frozen), :class:`Auditor` (score once, run every attack and analysis),
:class:`AuditResult` and :class:`AuditHistory` (the leakage curve), prefix sensitivity
(docs/architecture.md)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Auditor": "mia_guard.audit.auditor",
    "AuditConfig": "mia_guard.audit.config",
    "AnalysisInput": "mia_guard.analyses.registry",
    "register_analysis": "mia_guard.analyses.registry",
    "DEFAULT_ATTACKS": "mia_guard.audit.config",
    "DEFAULT_FPRS": "mia_guard.audit.config",
    "AuditResult": "mia_guard.audit.result",
    "AuditHistory": "mia_guard.audit.result",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
