"""What every process of a distributed run must agree on, read or decided on rank 0 and
broadcast (JSON over the process group of :mod:`mia_guard.scoring.distributed`): the
saved curve a run resumes from, and each audit's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..audit.result import AuditHistory, AuditResult


def saved_history(group: Any, path: Path) -> AuditHistory | None:
    """``history.json`` as rank 0 reads it, on every process (without token statistics on the
    others, so no process needs a shared filesystem); ``None`` when there is none.

    Raises:
        ValueError: rank 0 could not read it (on every process, with rank 0's reason).
    """
    if group is None:
        return AuditHistory.load(path) if path.exists() else None
    saved, payload = None, None
    if group.is_root:
        try:
            saved = AuditHistory.load(path) if path.exists() else None
            payload = {"history": saved.to_dict(include_stats=False) if saved is not None else None}
        except (OSError, ValueError) as err:
            payload = {"error": str(err)}
    payload = group.broadcast_json(payload)
    if "error" in payload:
        raise ValueError(f"cannot resume the audit history (read on rank 0): {payload['error']}")
    if group.is_root or payload["history"] is None:
        return saved
    return AuditHistory.from_dict(payload["history"])


def share_outcome(
    group: Any, history: AuditHistory, decisions: dict, result: AuditResult | None, decision: Any, failure: str | None
) -> tuple[Any, Any, str | None]:
    """Rank 0's result (without token statistics), gate decision and failure, on every
    process; the other processes append the result to ``history`` and the decision to
    ``decisions`` (by step)."""
    payload = None
    if group.is_root:
        payload = {
            "failure": failure,
            "result": result.to_dict(include_stats=False) if result is not None else None,
            "decision": decision.to_dict() if decision is not None else None,
        }
    payload = group.broadcast_json(payload)
    if group.is_root:
        return result, decision, failure
    if payload["failure"] is not None:
        return None, None, payload["failure"]
    result = AuditResult.from_dict(payload["result"])
    history.append(result)
    if payload["decision"] is not None:
        from ..gate import GateDecision

        decision = GateDecision.from_dict(payload["decision"])
        decisions[result.step] = decision
    return result, decision, None
