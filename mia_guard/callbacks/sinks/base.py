"""The Sink interface: where an audit's figures go while training runs.

:class:`~mia_guard.callbacks.session.AuditSession` holds a list of sinks and calls each
the same way, on the main process only (rank 0; other processes never build or call
one):

* :meth:`Sink.start` once when a run starts or resumes, with the curve so far (empty for
  a fresh run; after a resume, the audits up to the checkpoint and their gate decisions)
  and the step it starts from (0, or the checkpoint's step);
* :meth:`Sink.write` after every audit, with its result and gate decision (``None``
  without a release policy), after ``history.json`` was saved;
* :meth:`Sink.update` when an audit already written gained figures (the final audit's
  secret extraction, when the run's last step had been audited before it was known to
  be the last), with the new scalars only;
* :meth:`Sink.finish` once at the end of training, with the whole curve;
* :meth:`Sink.close` last (also when a run ends without :meth:`finish`).

A sink reads results and decisions and writes them somewhere; it never changes them.
Figures and their names are the same in every sink
(:func:`~mia_guard.callbacks.sinks.scalars.audit_scalars`). Only :meth:`write` must be
implemented. The durable record is ``history.json`` and the report, not a sink.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from ...audit.result import AuditHistory, AuditResult
    from ...gate.decision import GateDecision


class Sink(ABC):
    """Receives every audit of a run (see the module docstring for the call order)."""

    def start(  # noqa: B027
        self, history: AuditHistory, decisions: Mapping[int, GateDecision], step: int = 0
    ) -> None:
        """A run starts at step 0 (``history`` empty) or resumes from a checkpoint at
        ``step`` (``history`` holds the audits kept, ``decisions`` their gate decisions by
        step). Default: nothing."""

    @abstractmethod
    def write(self, result: AuditResult, decision: GateDecision | None) -> None:
        """One audit: its result and the release gate's decision (``None`` without a policy)."""

    def update(self, result: AuditResult, decision: GateDecision | None, new: Mapping[str, float]) -> None:
        """The audit at ``result.step``, already written, gained the scalars ``new`` (tags as
        :func:`~mia_guard.callbacks.sinks.scalars.audit_scalars` names them) and perhaps a new
        gate decision. Default: :meth:`write` the whole audit again; sinks that would then
        hold its points twice write only ``new``."""
        self.write(result, decision)

    def finish(self, history: AuditHistory) -> None:  # noqa: B027
        """Training ended; ``history`` is the whole curve. Default: nothing."""

    def close(self) -> None:  # noqa: B027
        """Release files or connections. Default: nothing."""
