"""The Sink interface: where an audit's figures go while training runs.

:class:`~mia_guard.callbacks.session.AuditSession` holds a list of sinks and calls each
the same way, on the main process only (rank 0; other processes never build or call
one):

* :meth:`Sink.start` once when a run starts or resumes, with the curve so far (empty for
  a fresh run; after a resume, the audits up to the checkpoint and their gate decisions);
* :meth:`Sink.write` after every audit, with its result and gate decision (``None``
  without a release policy), after ``history.json`` was saved;
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

    def start(self, history: AuditHistory, decisions: Mapping[int, GateDecision]) -> None:  # noqa: B027
        """A run starts (``history`` empty) or resumes from a checkpoint (``history`` holds the
        audits kept, ``decisions`` their gate decisions by step). Default: nothing."""

    @abstractmethod
    def write(self, result: AuditResult, decision: GateDecision | None) -> None:
        """One audit: its result and the release gate's decision (``None`` without a policy)."""

    def finish(self, history: AuditHistory) -> None:  # noqa: B027
        """Training ended; ``history`` is the whole curve. Default: nothing."""

    def close(self) -> None:  # noqa: B027
        """Release files or connections. Default: nothing."""
