"""JSONL sink: one line of figures per audit (``audits.jsonl``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from ..._io import atomic_write_text
from ...audit.result import AuditHistory, AuditResult
from .scalars import audit_scalars


class JsonlSink:
    """One JSON line per audit in ``path``: step, time, best attack, scalars, left-out figures, verdict.

    Lines are appended (one ``write`` each, flushed); :meth:`rewrite` replaces the file
    atomically with the lines of a history (used when training resumes from a checkpoint,
    so later audits of the abandoned run disappear).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @staticmethod
    def line(result: AuditResult, verdict: str | None = None) -> str:
        scalars, unresolved = audit_scalars(result)
        record = {
            "step": result.step,
            "timestamp": result.timestamp,
            "best_attack": result.best_attack(),
            "scalars": scalars,
            "unresolved": unresolved,
            "skipped": result.skipped,
            "gate": verdict,
        }
        return json.dumps(record, sort_keys=True, allow_nan=False)

    def write(self, result: AuditResult, verdict: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(self.line(result, verdict) + "\n")
            handle.flush()

    def rewrite(self, history: AuditHistory, verdicts: Mapping[int, str] | None = None) -> None:
        verdicts = verdicts or {}
        lines = [self.line(r, verdicts.get(r.step)) + "\n" for r in history]
        atomic_write_text(self.path, "".join(lines))
