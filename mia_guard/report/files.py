"""Report files of a training run's audits: ``report.json``, ``report.md``, ``leakage.png``, ``roc.png``.

::

    from mia_guard.report.files import write_report, load_report
    paths = write_report(auditor.history, "runs/mia", canaries=canaries, run_info={"dp_epsilon": 8.0})
    report = load_report(paths["json"])

The JSON schema is documented in :mod:`mia_guard.report.schema`; ``docs/reading_the_report.md``
explains the figures to a reviewer. Every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .markdown import LEAKAGE_PNG, PROFILE_PNG, ROC_PNG, final_profile, render_markdown
from .schema import (
    REPORT_FORMAT,
    REPORT_SCHEMA_VERSION,
    GateDecisionRecord,
    audit_entry,
    build_report,
    final_audit,
    load_report,
    validate_report,
)

if TYPE_CHECKING:
    from ..audit.result import AuditHistory
    from ..canaries.canary_set import CanarySet

__all__ = [
    "REPORT_FILES",
    "REPORT_FORMAT",
    "REPORT_SCHEMA_VERSION",
    "audit_entry",
    "build_report",
    "load_report",
    "validate_report",
    "write_report",
]

#: Keys of :func:`write_report`'s result and the file names it writes.
REPORT_FILES = {"json": "report.json", "markdown": "report.md", "leakage": LEAKAGE_PNG, "roc": ROC_PNG}


def write_report(
    history: "AuditHistory",
    directory: str | os.PathLike,
    *,
    canaries: "CanarySet | None" = None,
    decision: GateDecisionRecord | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the report files of ``history`` into ``directory`` (created if needed).

    Args:
        history: the audits of one run (``Auditor.history`` or ``AuditHistory.load``).
        directory: where to write; existing report files are replaced atomically.
        canaries: the audited CanarySet, for the template and secret-space size (must
            match the history's canary hash).
        decision: a release-gate decision to include (``mia_guard.gate.evaluate_result``).
        run_info: JSON-able facts about the run passed through (DP epsilon, training args).

    Returns:
        ``{"json", "markdown", "leakage", "roc"}`` -> path written, plus ``"profile"``
        (``profile.png``) when the final audit ran the ``"profile"`` analysis.

    Raises:
        ValueError: empty history, mismatched canaries, or values JSON cannot store.
    """
    from .plots import leakage_png, roc_png

    report = build_report(history, canaries=canaries, decision=decision, run_info=run_info)
    directory = Path(directory)
    paths = {key: directory / name for key, name in REPORT_FILES.items()}
    # figures first: report.json appears only once everything it refers to exists
    atomic_write_bytes(paths["leakage"], leakage_png(report))
    atomic_write_bytes(paths["roc"], roc_png(history))
    profile = final_profile(final_audit(report))
    if profile is not None:
        from ..analyses.profile import plot_profile

        paths["profile"] = plot_profile(profile, directory / PROFILE_PNG)
    atomic_write_text(paths["markdown"], render_markdown(report))
    atomic_write_json(paths["json"], report, checksum=True)  # sealed: load_report refuses an edited report
    return paths
