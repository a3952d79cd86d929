"""Minimum evidence behind a verdict: checks about the audit itself rather than one figure.

A verdict is only as good as the canaries behind it. Whatever the limits say, the final
audit must have

* at least ``min_canaries_per_class`` members and as many non-members with valid
  (finite) statistics (default :data:`DEFAULT_MIN_CANARIES_PER_CLASS`): below that the
  intervals rest on a handful of canaries and say little (with 1 + 1 canaries an AUC is
  0, 0.5 or 1);
* at most ``max_invalid_share`` of its canaries left out for invalid statistics (default
  :data:`DEFAULT_MAX_INVALID_SHARE`): the figures describe only the canaries that
  remain, and the ones dropped may be exactly those the model memorized;
* been the audit of the final model: an audit that failed after it (recorded in the
  report's ``failed_audits``) leaves the model that would ship unmeasured.

Short of that the decision is ``inconclusive`` at best (a figure that already blocks
still blocks) and it *fails closed*: it never releases, whatever ``on_inconclusive``
says. The same holds for a figure that was never measured (see
:mod:`mia_guard.gate.judging`). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

#: Default fewest members, and fewest non-members, with valid statistics (``min_canaries_per_class``).
DEFAULT_MIN_CANARIES_PER_CLASS = 25
#: Default largest share of canaries with invalid statistics (``max_invalid_share``).
DEFAULT_MAX_INVALID_SHARE = 0.05


def record(key: str, figure: str, limit: float | None, verdict: str, reason: str, *, source: str | None = None,
           value: float | None = None, low: float | None = None, high: float | None = None,
           fail_closed: bool = False) -> dict:
    """One check of :attr:`mia_guard.gate.GateDecision.checks` (JSON-able)."""
    return {
        "key": key,
        "figure": figure,
        "limit": None if limit is None else float(limit),
        "verdict": verdict,
        "source": source,
        "value": value,
        "low": low,
        "high": high,
        "reason": reason,
        "fail_closed": bool(fail_closed),
    }


def evidence_checks(policy: Any, entry: Mapping[str, Any]) -> list[dict]:
    """Fail-closed ``inconclusive`` checks for an audit with too few valid canaries or too many
    invalid ones; empty when the evidence suffices (or no attack ran: every attack check
    fails closed then anyway).

    ``policy`` is a :class:`~mia_guard.gate.policy.ReleasePolicy` (not imported: the policy
    module imports this one for its defaults). ``entry`` is a validated audit record: every attack's ``n_members`` / ``n_nonmembers``
    count the same valid canaries.
    """
    metrics = entry["metrics"]
    if not metrics:
        return []
    counts = next(iter(metrics.values()))
    members, non_members = int(counts["n_members"]), int(counts["n_nonmembers"])
    invalid = len(entry["invalid_canaries"])
    step = entry["step"]
    checks = []
    fewest = min(members, non_members)
    if fewest < policy.min_canaries_per_class:
        checks.append(record(
            "min_canaries_per_class", "valid canaries per class", policy.min_canaries_per_class, "inconclusive",
            f"inconclusive: the audit at step {step} has {members} member and {non_members} non-member canaries "
            f"with valid statistics, fewer than min_canaries_per_class = {policy.min_canaries_per_class} of each; "
            "its intervals cannot be trusted to release anything: audit more canaries",
            value=float(fewest), fail_closed=True,
        ))
    share = invalid / (members + non_members + invalid)
    if share > policy.max_invalid_share:
        checks.append(record(
            "max_invalid_share", "share of invalid canaries", policy.max_invalid_share, "inconclusive",
            f"inconclusive: {invalid} of {members + non_members + invalid} canaries ({share:.1%}) had invalid "
            f"(NaN/inf) statistics at step {step} and were left out, more than max_invalid_share = "
            f"{policy.max_invalid_share:g}; the figures describe only the rest: find why the model's outputs are "
            "not finite (e.g. fp16 overflow) and audit again",
            value=share, fail_closed=True,
        ))
    return checks


def failed_audit_checks(failures: Sequence[Mapping[str, Any]], final_step: int) -> list[dict]:
    """A fail-closed check when an audit failed at or after the final audit's step."""
    later = [f for f in failures if int(f["step"]) >= final_step]
    if not later:
        return []
    last = max(later, key=lambda f: int(f["step"]))
    return [record(
        "failed_audits", "audit of the final model", None, "inconclusive",
        f"inconclusive: the audit at step {last['step']} failed ({last['reason']}); the last audit that ran is at "
        f"step {final_step}, so the final model was not measured: fix the cause and audit it (`mia-guard audit`)",
        fail_closed=True,
    )]
