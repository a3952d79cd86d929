"""JSONL sink: one line of figures per audit (``audits.jsonl``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..._io import atomic_write_text
from ...audit.result import AuditHistory, AuditResult
from .base import Sink
from .scalars import audit_scalars


class JsonlSink(Sink):
    """One JSON line per audit in ``path``: step, time, best attack, scalars, left-out figures, verdict.

    Lines are appended (one ``write`` each, flushed); :meth:`update` replaces an audit's
    line when it gained figures afterwards; :meth:`start` replaces the file
    atomically with the lines of the curve so far (empty for a fresh run; after a resume
    from a checkpoint, later audits of the abandoned run disappear).
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

    def write(self, result: AuditResult, decision: Any = None) -> None:
        verdict = decision.verdict if decision is not None else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(self.line(result, verdict) + "\n")
            handle.flush()

    def update(self, result: AuditResult, decision: Any, new: Mapping[str, float]) -> None:
        """Replace the audit's line (the last line of its step) with the completed one, atomically."""
        verdict = decision.verdict if decision is not None else None
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.exists() else []
        ours = [i for i, line in enumerate(lines) if json.loads(line).get("step") == result.step]
        replacement = self.line(result, verdict) + "\n"
        if ours:
            lines[ours[-1]] = replacement
        else:
            lines.append(replacement)
        atomic_write_text(self.path, "".join(lines))

    def start(self, history: AuditHistory, decisions: Mapping[int, Any], step: int = 0) -> None:
        lines = [self.line(r, decisions[r.step].verdict if r.step in decisions else None) + "\n" for r in history]
        atomic_write_text(self.path, "".join(lines))
