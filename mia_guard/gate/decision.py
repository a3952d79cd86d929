"""Judging an audit against a policy: :class:`GateDecision` from a report or an
:class:`~mia_guard.audit.result.AuditResult`, each figure on its interval bounds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..report.schema import audit_entry, pct, validate_report
from ..report.validation import check_audit_entry
from .evidence import evidence_checks, failed_audit_checks, record
from .judging import attack_reading, failed_reading, judge, privacy_reading, reading_record, reason, severity
from .policy import ReleasePolicy
from .rules import RULES, STRONGEST, VERDICTS, Rule

if TYPE_CHECKING:
    from ..audit.result import AuditResult

EXIT_RELEASE = 0
EXIT_BLOCKED = 1


@dataclass
class GateDecision:
    """The gate's verdict on one audit.

    Attributes:
        verdict: ``"pass"``, ``"blocked"`` or ``"inconclusive"``.
        reasons: one sentence per check, naming the figure, attack, interval and limit.
        exit_code: 0 release, 1 blocked (inconclusive counts as blocked unless the
            policy's ``on_inconclusive`` is ``"pass"``).
        policy: the policy as a dict (:meth:`ReleasePolicy.to_dict`).
        step: training step of the judged audit.
        checks: per check, ``{"key", "figure", "limit", "verdict", "source", "value",
            "low", "high", "reason", "fail_closed"}`` (JSON-able; NaN written as ``None``).
            ``fail_closed`` marks an inconclusive check that never releases (nothing was
            measured, no interval, too little evidence), whatever ``on_inconclusive`` says.
    """

    verdict: str
    reasons: list[str]
    exit_code: int
    policy: dict
    step: int
    checks: list[dict] = field(default_factory=list)

    @property
    def released(self) -> bool:
        """True when the model may be released (exit code 0)."""
        return self.exit_code == EXIT_RELEASE

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "released": self.released,
            "exit_code": self.exit_code,
            "step": self.step,
            "reasons": list(self.reasons),
            "checks": [dict(c) for c in self.checks],
            "policy": dict(self.policy),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GateDecision":
        try:
            verdict = str(data["verdict"])
            if verdict not in VERDICTS:
                raise ValueError(f"unknown verdict {verdict!r}")
            return cls(
                verdict=verdict,
                reasons=[str(r) for r in data["reasons"]],
                exit_code=int(data["exit_code"]),
                policy=dict(data["policy"]),
                step=int(data["step"]),
                checks=[dict(c) for c in data.get("checks", [])],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a GateDecision dict ({err!r})") from err

    def explain(self) -> str:
        """A one-screen explanation: verdict, the policy in one line, one line per check."""
        action = "RELEASE" if self.released else "DO NOT RELEASE"
        p = self.policy
        lines = [
            f"mia-guard gate: {self.verdict.upper()} -> {action} (exit {self.exit_code}); audit at step {self.step}",
            f"policy: attack = {p.get('attack')}, confidence = {p.get('confidence')}, "
            f"on_inconclusive = {p.get('on_inconclusive')}",
        ]
        lines += [f"  - {reason}" for reason in self.reasons]
        fail_closed = any(c.get("fail_closed") for c in self.checks if c.get("verdict") == "inconclusive")
        lines.append(_summary(self.verdict, self.released, fail_closed))
        return "\n".join(lines)


def _summary(verdict: str, released: bool, fail_closed: bool) -> str:
    if verdict == "pass":
        return "Every limit holds at the upper end of its interval."
    if verdict == "blocked":
        return "At least one figure exceeds its limit even at the lower end of its interval."
    if released:
        return "Some figure could not be decided; the policy releases anyway (on_inconclusive = \"pass\")."
    if fail_closed:
        return (
            "Something the decision needs was not measured (see the reasons above); the gate fails closed whatever "
            "on_inconclusive says: fix it and audit again."
        )
    return (
        "Some figure could not be decided and the policy fails closed (on_inconclusive = \"block\"): "
        "add canaries (narrower intervals, resolvable FPRs) or relax the limit."
    )


def evaluate_report(policy: ReleasePolicy, report: dict) -> GateDecision:
    """Judge the final audit of a report dict (:func:`mia_guard.report.files.load_report`).

    The report is validated field by field first (:mod:`mia_guard.report.validation`).

    Raises:
        ValueError: the report is malformed (the message names the bad field), or the
            policy cannot be judged on it (higher confidence than its intervals, FPR level
            not measured, unknown attack, a limit the figure cannot exceed).
    """
    validate_report(report)
    final = report["audits"][-1]
    failures = failed_audit_checks(report.get("failed_audits") or [], final["step"])
    return _evaluate_entry(policy, final, report_fprs=report["fprs"], extra_checks=failures)


def evaluate_result(
    policy: ReleasePolicy, result: "AuditResult", *, failed_audits: Sequence[Mapping[str, Any]] = ()
) -> GateDecision:
    """Judge one :class:`~mia_guard.audit.result.AuditResult` (e.g. after each audit in a callback).

    Same judgement as :func:`evaluate_report` on a report whose final audit is ``result``
    and whose ``failed_audits`` are ``failed_audits`` (``AuditHistory.failures``): one at
    or after ``result.step`` makes the decision fail closed.

    Raises:
        ValueError: the result holds malformed figures, or the policy cannot be judged on it.
    """
    entry = audit_entry(result)
    check_audit_entry(entry, path=f"audit at step {entry['step']}", source="the audit result")
    return _evaluate_entry(policy, entry, report_fprs=None,
                           extra_checks=failed_audit_checks(failed_audits, entry["step"]))


def _evaluate_entry(
    policy: ReleasePolicy, entry: dict, report_fprs: list[float] | None, extra_checks: list[dict] = ()
) -> GateDecision:
    """The shared implementation: ``entry`` is a validated report audit record (:func:`audit_entry`).

    The FPR levels the audit measured are read from its metrics; ``report_fprs`` (the
    report's levels) stands in when no attack produced metrics, and ``None`` skips the
    FPR check then (every attack check fails closed anyway).
    """
    if not isinstance(policy, ReleasePolicy):
        raise TypeError(f"policy must be a ReleasePolicy, got {type(policy).__name__}")
    step = int(entry["step"])
    confidence = float(entry["member_nll"]["confidence"])
    metrics: dict[str, dict] = entry["metrics"]
    skipped: dict[str, str] = entry["skipped"]
    failed: dict[str, str] = entry.get("failed_attacks") or {}
    measured = {float(f) for m in metrics.values() for f in m["tpr_at_fpr"]}
    if not measured and report_fprs is not None:
        measured = {float(f) for f in report_fprs}
    policy.check_compatible(fprs=measured or None, confidence=confidence)
    _check_exceedable(policy, entry)
    attacks = _attacks_to_judge(policy, metrics, {**skipped, **failed}, step)
    failed = {a: why for a, why in failed.items() if policy.attack in (STRONGEST, a)}

    checks = []
    for rule in RULES:
        limit = policy.limits.get(rule.key)
        if limit is None:
            continue
        for fpr, value in (limit.items() if rule.per_fpr else [(None, limit)]):
            checks.append(_check(rule, fpr, value, entry, attacks, failed, skipped, policy, confidence))
    checks += evidence_checks(policy, entry) + list(extra_checks)

    worst = max((VERDICTS.index(c["verdict"]) for c in checks), default=0)
    verdict = VERDICTS[worst]
    fail_closed = verdict == "inconclusive" and any(c["fail_closed"] for c in checks if c["verdict"] == "inconclusive")
    blocks = verdict == "blocked" or (verdict == "inconclusive" and (policy.on_inconclusive == "block" or fail_closed))
    return GateDecision(
        verdict=verdict,
        reasons=[c["reason"] for c in checks],
        exit_code=EXIT_BLOCKED if blocks else EXIT_RELEASE,
        policy=policy.to_dict(),
        step=step,
        checks=checks,
    )


def _check_exceedable(policy: ReleasePolicy, entry: dict) -> None:
    """Refuse an exposure limit at or above the most exposure the canaries can show (their cap)."""
    limit = policy.limits.get("max_exposure")
    cap = ((entry.get("extras") or {}).get("privacy") or {}).get("exposure_cap_bits")
    if limit is not None and isinstance(cap, (int, float)) and not isinstance(cap, bool) and limit >= cap:
        raise ValueError(
            f"max_exposure = {limit:g} bits can never be exceeded: these canaries show at most {cap:g} bits (log2 of "
            "the secret space), so the limit would release every model; use a limit below it"
        )


def _attacks_to_judge(policy: ReleasePolicy, metrics: dict, not_measured: dict, step: int) -> list[str]:
    if policy.attack == STRONGEST:
        return list(metrics)
    if policy.attack in metrics or policy.attack in not_measured:
        return [policy.attack] if policy.attack in metrics else []
    known = list(metrics) + list(not_measured)
    close = difflib.get_close_matches(policy.attack, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"the policy judges attack {policy.attack!r} but the audit at step {step} ran "
        f"{', '.join(known) or 'no attack'}{hint} (or use attack = \"{STRONGEST}\")"
    )


def _check(
    rule: Rule,
    fpr: float | None,
    limit: float,
    entry: dict,
    attacks: list[str],
    failed: dict[str, str],
    skipped: dict[str, str],
    policy: ReleasePolicy,
    confidence: float,
) -> dict:
    """Judge one limit on every figure it reads; the worst reading decides."""
    label = rule.label.format(fpr=pct(fpr)) if fpr is not None else rule.label
    key = f"{rule.key}[{fpr!r}]" if fpr is not None else rule.key
    missing: list[str] = []
    if rule.attack_figure is not None:
        readings = [attack_reading(rule, fpr, entry["metrics"][a], a) for a in attacks]
        readings += [failed_reading(a, why) for a, why in failed.items()]
        if not readings:
            why = (
                f"attack {policy.attack!r} was skipped ({skipped[policy.attack]})"
                if policy.attack in skipped
                else "no attack produced metrics"
            )
            return record(key, label, limit, "inconclusive",
                          f"inconclusive: {label}: {why} at step {entry['step']}; nothing was measured, so the gate "
                          "fails closed", fail_closed=True)
    else:
        privacy = (entry.get("extras") or {}).get("privacy") or {}
        readings = [privacy_reading(rule, name, privacy, confidence) for name in rule.privacy_figures if name in privacy]
        missing = [name for name in rule.privacy_figures if name not in privacy]
        if not readings:
            figures = " / ".join(missing)
            return record(
                key, label, limit, "inconclusive",
                f"inconclusive: {key}: the audit at step {entry['step']} did not compute the {label} "
                f"(no {figures} in extras['privacy']; {_why_absent(privacy)}). Nothing was measured, so the gate "
                "fails closed",
                fail_closed=True,
            )
    for r in readings:
        if not r.failed and r.confidence + 1e-12 < policy.confidence:
            raise ValueError(
                f"{label} of {r.source} has a {r.confidence:.3g} interval but the policy requires "
                f"{policy.confidence:.3g} confidence; recompute it at that level or lower the policy's confidence"
            )
    judged = [(judge(r, limit), r) for r in readings]
    (verdict, _), worst = max(judged, key=lambda jr: severity(jr[0][0], jr[0][1], jr[1]))
    fail_closed = verdict == "inconclusive" and any(fc for (v, fc), _ in judged if v == "inconclusive")
    text = reason(verdict, label, key, limit, worst, rule)
    others = sorted({r.source for (v, _), r in judged if v == "blocked" and r is not worst})
    if others:
        text += f"; also blocked: {', '.join(others)}"
    if len(readings) > 1 and rule.attack_figure is not None:
        text += f" (worst of {len(readings)} attacks)"
    if missing:
        text += f" ({', '.join(missing)} not computed)"
    return reading_record(key, label, limit, verdict, worst, text, fail_closed)


def _why_absent(privacy: Mapping[str, Any]) -> str:
    if isinstance(privacy.get("error"), str):
        return f"the privacy analysis failed: {privacy['error']}"
    return "enable the privacy figures in the audit (analyses=[\"privacy\"])"
