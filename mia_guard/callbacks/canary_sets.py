"""Several named canary sets in one training run: one audit per set, one report, one gate.

``MIAAuditCallback({"credentials": set_a, "texts": set_b}, ...)`` (and the same for
:class:`~mia_guard.callbacks.AuditLoop`) audits each set at every audit step: a scoring
pass per set, its own attacks, intervals and curve. :class:`SessionGroup` holds one
:class:`~mia_guard.callbacks.session.AuditSession` per set and presents them to the
integrations as one session:

* files: each set's files in ``<output_dir>/<set>/`` (``history.json``,
  ``canaries.json``, ``audits.jsonl``, and at the end its full report), and in
  ``<output_dir>`` a report set covering them all (``report.json``, ``report.md``;
  :mod:`mia_guard.report.report_set`);
* figures: one TensorBoard sink and the tracker sinks shared by all sets, every figure
  under the set's name (``mia/<set>/<attack>/auc``, ``mia/<set>/loss/member``, ...;
  ``AuditResult.canary_set``), a Custom Scalars category per set;
* gate: each set's final audit judged against the policy, combined so that the
  verdict is the worst set's and **any blocked set blocks**
  (:func:`mia_guard.gate.combined.combine_decisions`); with ``stop_on_blocked`` any
  blocked set stops training.

A run with a single unnamed set is the plain :class:`AuditSession`, with its names and
files unchanged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..audit.auditor import Auditor
from ..audit.result import AuditHistory, AuditResult
from .cadence import AuditCadence
from .extraction_schedule import ExtractionSchedule
from .session import AuditSession
from .sinks.base import Sink
from .sinks.tensorboard import TensorBoardSink


class _Forward(Sink):
    """A shared sink as one set's session sees it: audits go through, the run's start,
    finish and close are the group's to call, once."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, result: AuditResult, decision: Any = None) -> None:
        self.sink.write(result, decision)

    def update(self, result: AuditResult, decision: Any, new: Mapping[str, float]) -> None:
        self.sink.update(result, decision, new)


class SessionGroup:
    """One :class:`AuditSession` per named canary set, used as one session (see the module docstring).

    Args:
        auditors: set name -> its Auditor (names checked by
            :func:`~mia_guard.report.report_set.check_set_name`).
        output_dir: the run's audit directory; each set writes into ``<output_dir>/<set>``.
        tensorboard_dir, jsonl, sinks, policy, extraction, is_main: as for
            :class:`AuditSession` (one TensorBoard sink and the ``sinks`` serve every set).
        cadence: when to audit (:class:`~mia_guard.callbacks.cadence.AuditCadence`); it is
            told the cost of each audit step as the sum over the sets (each set's
            ``extras["cost"]`` has that set's seconds only).
    """

    def __init__(
        self,
        auditors: Mapping[str, Auditor],
        output_dir: str | os.PathLike,
        *,
        tensorboard_dir: str | os.PathLike | None = None,
        jsonl: bool = True,
        sinks: Sequence[Sink] = (),
        policy: Any = None,
        extraction: ExtractionSchedule | None = None,
        is_main: bool = True,
        cadence: AuditCadence | None = None,
    ) -> None:
        from ..report.report_set import check_set_name

        if len(auditors) < 1:
            raise ValueError("a SessionGroup needs at least one named canary set")
        for name in auditors:
            check_set_name(name)
        self.output_dir = Path(output_dir)
        self.cadence = cadence if cadence is not None else AuditCadence(None, None)
        self.policy = policy
        self.is_main = is_main
        first = next(iter(auditors.values()))
        #: sinks shared by every set (main process only)
        self.sinks: list[Sink] = []
        if is_main and tensorboard_dir is not None:
            membership = {name: a.canaries.is_member for name, a in auditors.items()}
            self.sinks.append(TensorBoardSink(tensorboard_dir, [a.name for a in first.attacks], first.fprs, membership))
        if is_main:
            self.sinks.extend(sinks)
        #: one session per set, in the given order
        self.sessions: dict[str, AuditSession] = {
            name: AuditSession(
                auditor, self.output_dir / name, jsonl=jsonl, sinks=[_Forward(s) for s in self.sinks],
                policy=policy, extraction=extraction, is_main=is_main, canary_set=name,
            )
            for name, auditor in auditors.items()
        }

    # ------------------------------------------------------------------ views
    @property
    def group(self) -> Any:
        """The distributed process group (``None`` in a single-process run)."""
        return next(iter(self.sessions.values())).group

    @property
    def histories(self) -> dict[str, AuditHistory]:
        return {name: s.history for name, s in self.sessions.items()}

    @property
    def last_decision(self) -> Any:
        """The combined gate decision of the sets' latest audits (``None`` without a policy)."""
        decisions = {name: s.last_decision for name, s in self.sessions.items()}
        if any(d is None for d in decisions.values()):
            return None
        from ..gate.combined import combine_decisions

        return combine_decisions(decisions)

    def audited(self, step: int) -> bool:
        return all(s.audited(step) for s in self.sessions.values())

    # ------------------------------------------------------------------ run events
    def resume(self, step: int) -> None:
        for session in self.sessions.values():
            session.resume(step)
        self._start(step)

    def start_fresh(self) -> None:
        for session in self.sessions.values():
            session.start_fresh()
        self._start(0)

    def audit(self, model: Any, step: int, final: bool = False) -> tuple[dict[str, AuditResult | None], Any]:
        """Audit every set at ``step``; returns ``({set: result or None}, combined decision)``."""
        started = time.perf_counter()
        results = {name: s.audit(model, step, final=final)[0] for name, s in self.sessions.items()}
        self.cadence.record(int(step), time.perf_counter() - started)
        self.cadence.shared_next_check(self.group)
        return results, self.last_decision

    def extract_after(self, model: Any, step: int) -> None:
        for session in self.sessions.values():
            session.extract_after(model, step)

    def finish(self, run_info: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Each set's report in its directory, the shared sinks' final figures, and the report
        set in ``output_dir``; returns the report set's paths plus ``"<set>"`` -> that set's
        ``report.json``."""
        reports = {}
        for name, session in self.sessions.items():
            paths = session.finish(run_info)
            if "json" in paths:
                reports[name] = paths["json"]
        for sink in self.sinks:
            for history in self.histories.values():
                if history.last is not None:
                    sink.finish(history)
        self.close()
        if not self.is_main or not reports:
            return {}
        from ..report.report_set import write_report_set

        return {**write_report_set(self.output_dir, reports, self.last_decision), **reports}

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        for sink in self.sinks:
            sink.close()

    def _start(self, step: int) -> None:
        first = next(iter(self.sessions.values()))
        for sink in self.sinks:
            sink.start(first.history, dict(first.decisions), step=step)
