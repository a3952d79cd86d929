"""Judging an audit against a policy: :class:`GateDecision` from a report or an
:class:`~mia_guard.audit.result.AuditResult`, each figure on its interval bounds.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ..report.schema import audit_entry, pct, validate_report
from .policy import ReleasePolicy
from .rules import RULES, STRONGEST, VERDICTS, Reading, Rule

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
            "low", "high", "reason"}`` (JSON-able; NaN written as ``None``).
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
        lines.append(_summary(self.verdict, self.released))
        return "\n".join(lines)


def _summary(verdict: str, released: bool) -> str:
    if verdict == "pass":
        return "Every limit holds at the upper end of its interval."
    if verdict == "blocked":
        return "At least one figure exceeds its limit even at the lower end of its interval."
    if released:
        return "Some figure could not be decided; the policy releases anyway (on_inconclusive = \"pass\")."
    return (
        "Some figure could not be decided and the policy fails closed (on_inconclusive = \"block\"): "
        "add canaries (narrower intervals, resolvable FPRs) or relax the limit."
    )


def evaluate_report(policy: ReleasePolicy, report: dict) -> GateDecision:
    """Judge the final audit of a report dict (:func:`mia_guard.report.files.load_report`).

    Raises:
        ValueError: the report is malformed, or the policy cannot be judged on it
            (higher confidence than its intervals, FPR level not measured, unknown attack).
    """
    validate_report(report)
    return _evaluate_entry(policy, report["audits"][-1], report_fprs=report["fprs"])


def evaluate_result(policy: ReleasePolicy, result: "AuditResult") -> GateDecision:
    """Judge one :class:`~mia_guard.audit.result.AuditResult` (e.g. after each audit in a callback).

    Same judgement as :func:`evaluate_report` on a report whose final audit is ``result``.
    """
    return _evaluate_entry(policy, audit_entry(result), report_fprs=None)


def _evaluate_entry(policy: ReleasePolicy, entry: dict, report_fprs: list[float] | None) -> GateDecision:
    """The shared implementation: ``entry`` is a report audit record (:func:`audit_entry`).

    The FPR levels the audit measured are read from its metrics; ``report_fprs`` (the
    report's levels) stands in when no attack produced metrics, and ``None`` skips the
    FPR check then (every attack check is inconclusive anyway).
    """
    if not isinstance(policy, ReleasePolicy):
        raise TypeError(f"policy must be a ReleasePolicy, got {type(policy).__name__}")
    step = int(entry["step"])
    try:
        confidence = float(entry["member_nll"]["confidence"])
        metrics: dict[str, dict] = entry["metrics"]
        skipped: dict[str, str] = entry.get("skipped", {})
        measured = {float(f) for m in metrics.values() for f in m["tpr_at_fpr"]}
        if not measured and report_fprs is not None:
            measured = {float(f) for f in report_fprs}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the audit at step {step} is malformed ({err!r}); regenerate the report") from err
    policy.check_compatible(fprs=measured or None, confidence=confidence)
    attacks = _attacks_to_judge(policy, metrics, skipped, step)

    checks = []
    for rule in RULES:
        limit = policy.limits.get(rule.key)
        if limit is None:
            continue
        for fpr, value in (limit.items() if rule.per_fpr else [(None, limit)]):
            checks.append(_check(rule, fpr, value, entry, attacks, skipped, policy, confidence))

    worst = max((VERDICTS.index(c["verdict"]) for c in checks), default=0)
    verdict = VERDICTS[worst]
    blocks = verdict == "blocked" or (verdict == "inconclusive" and policy.on_inconclusive == "block")
    return GateDecision(
        verdict=verdict,
        reasons=[c["reason"] for c in checks],
        exit_code=EXIT_BLOCKED if blocks else EXIT_RELEASE,
        policy=policy.to_dict(),
        step=step,
        checks=checks,
    )


def _attacks_to_judge(policy: ReleasePolicy, metrics: dict, skipped: dict, step: int) -> list[str]:
    if policy.attack == STRONGEST:
        return list(metrics)
    if policy.attack in metrics or policy.attack in skipped:
        return [policy.attack] if policy.attack in metrics else []
    known = list(metrics) + list(skipped)
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
    skipped: dict,
    policy: ReleasePolicy,
    confidence: float,
) -> dict:
    """Judge one limit on every figure it reads; the worst reading decides."""
    label = rule.label.format(fpr=pct(fpr)) if fpr is not None else rule.label
    key = f"{rule.key}[{fpr!r}]" if fpr is not None else rule.key
    if rule.attack_figure is not None:
        readings = [_attack_reading(rule, fpr, entry["metrics"][a], a, confidence) for a in attacks]
        if not readings:
            why = (
                f"attack {policy.attack!r} was skipped ({skipped[policy.attack]})"
                if policy.attack in skipped
                else "no attack produced metrics"
            )
            return _record(key, label, limit, "inconclusive", None, f"inconclusive: {label}: {why} at step {entry['step']}")
        missing: list[str] = []
    else:
        privacy = (entry.get("extras") or {}).get("privacy") or {}
        readings = [_privacy_reading(rule, name, privacy, confidence) for name in rule.privacy_figures if name in privacy]
        missing = [name for name in rule.privacy_figures if name not in privacy]
        if not readings:
            figures = " / ".join(missing)
            return _record(
                key, label, limit, "inconclusive", None,
                f"inconclusive: {key}: the audit at step {entry['step']} did not compute the {label} "
                f"(no {figures} in extras['privacy']); enable the privacy figures in the audit",
            )
    for r in readings:
        if r.confidence + 1e-12 < policy.confidence:
            raise ValueError(
                f"{label} of {r.source} has a {r.confidence:.3g} interval but the policy requires "
                f"{policy.confidence:.3g} confidence; recompute it at that level or lower the policy's confidence"
            )
    judged = [(_judge(r, limit), r) for r in readings]
    (verdict, _), worst = max(judged, key=lambda jr: _severity(jr[0][0], jr[1]))
    reason = _reason(verdict, label, key, limit, worst, rule)
    others = sorted({r.source for (v, _), r in judged if v == "blocked" and r is not worst})
    if others:
        reason += f"; also blocked: {', '.join(others)}"
    if len(readings) > 1 and rule.attack_figure is not None:
        reason += f" (worst of {len(readings)} attacks)"
    if missing:
        reason += f" ({', '.join(missing)} not computed)"
    return _record(key, label, limit, verdict, worst, reason)


def _attack_reading(rule: Rule, fpr: float | None, metrics: dict, attack: str, confidence: float) -> Reading:
    est = rule.attack_figure(metrics, fpr)
    return Reading(
        source=attack,
        value=_float(est.get("value")),
        low=_float(est.get("low")),
        high=_float(est.get("high")),
        confidence=_float(est.get("confidence", confidence)),
        note=str(est.get("note") or ""),
    )


def _privacy_reading(rule: Rule, name: str, privacy: Mapping[str, Any], confidence: float) -> Reading:
    """``privacy[name]`` is a number (its interval, if any, in sibling fields ``<name>_low`` /
    ``<name>_high``) or ``{"value", "low"?, "high"?, "confidence"?, "note"?, "attack"?}``."""
    figure = privacy[name]
    if isinstance(figure, Mapping):
        if "value" not in figure:
            raise ValueError(f"extras['privacy'][{name!r}] has no 'value'; the report is malformed")
        value, low, high = (_float(figure.get(k)) for k in ("value", "low", "high"))
        conf = _float(figure.get("confidence", confidence))
        note = str(figure.get("note") or "")
        source = f"{name} ({figure['attack']})" if figure.get("attack") else name
    elif figure is None or (isinstance(figure, (int, float)) and not isinstance(figure, bool)):
        low, high = _float(privacy.get(f"{name}_low")), _float(privacy.get(f"{name}_high"))
        value, conf, note, source = _float(figure), _float(privacy.get("confidence", confidence)), "", name
    else:
        raise ValueError(f"extras['privacy'][{name!r}] = {figure!r} is neither a number nor a figure object")
    return Reading(source, value, low, high, conf, lower_bound=rule.lower_bound, note=note)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def _bounds(r: Reading) -> tuple[float, float]:
    """The interval used for judging; a figure without one is judged on its value."""
    if r.lower_bound or math.isnan(r.low) or math.isnan(r.high):
        return r.value, r.value
    return r.low, r.high


def _judge(r: Reading, limit: float) -> tuple[str, str]:
    if math.isnan(r.value):
        return "inconclusive", r.note or "the data cannot resolve it"
    low, high = _bounds(r)
    if low > limit:
        return "blocked", ""
    if high <= limit:
        return "pass", ""
    return "inconclusive", ""


def _severity(verdict: str, r: Reading) -> tuple[int, float]:
    """Order readings so the worst comes last: by verdict, then by the bound that decided it."""
    low, high = _bounds(r)
    if verdict == "inconclusive" and math.isnan(r.value):
        bound = math.inf
    else:
        bound = low if verdict == "blocked" else high
    return VERDICTS.index(verdict), bound


def _reason(verdict: str, label: str, key: str, limit: float, r: Reading, rule: Rule) -> str:
    who = f"attack {r.source!r}" if rule.attack_figure is not None else r.source
    if math.isnan(r.value):
        return f"inconclusive: {label} of {who} cannot be resolved ({r.note or 'no value'}); limit {key} = {limit:g}"
    if r.lower_bound:
        figure = f"{label} of {who} is {r.value:.3g}"
        relation = ">" if verdict == "blocked" else "<="
        return f"{verdict}: {figure} (already a lower bound) {relation} limit {key} = {limit:g}"
    low, high = _bounds(r)
    if math.isnan(r.low) or math.isnan(r.high):
        figure = f"{label} of {who} is {r.value:.3f} (no interval reported; judged on the value)"
    else:
        figure = f"{label} of {who} is {r.value:.3f} [{low:.3f}, {high:.3f}] ({r.confidence:.0%} interval)"
    if verdict == "blocked":
        return f"blocked: {figure}; lower bound {low:.3f} > limit {key} = {limit:g}"
    if verdict == "pass":
        return f"pass: {figure}; upper bound {high:.3f} <= limit {key} = {limit:g}"
    return f"inconclusive: {figure} contains the limit {key} = {limit:g}; more canaries would narrow it"


def _record(key: str, label: str, limit: float, verdict: str, r: Reading | None, reason: str) -> dict:
    def plain(x: float | None) -> float | None:
        return None if x is None or math.isnan(x) else float(x)

    return {
        "key": key,
        "figure": label,
        "limit": float(limit),
        "verdict": verdict,
        "source": r.source if r else None,
        "value": plain(r.value) if r else None,
        "low": plain(r.low) if r else None,
        "high": plain(r.high) if r else None,
        "reason": reason,
    }
