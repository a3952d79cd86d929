"""The run report: JSON schema and validation (torch-free), Markdown, plots, and the
files written at the end of a run (docs/architecture.md)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "write_report": "mia_guard.report.files",
    "load_report": "mia_guard.report.schema",
    "build_report": "mia_guard.report.schema",
    "validate_report": "mia_guard.report.schema",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
