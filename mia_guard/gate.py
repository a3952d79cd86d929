"""Release gate: a ReleasePolicy (TOML) judged on the bounds of the final audit's intervals.

A policy sets limits on figures of the final audit. Each limit is a *check*; a check
reads one or more figures (one per attack for attack figures) and judges each on its
confidence interval:

* ``blocked``      the interval's lower bound exceeds the limit (leakage shown);
* ``pass``         the upper bound is at or below the limit (leakage ruled out);
* ``inconclusive`` the interval contains the limit, or the figure cannot be resolved
  (NaN value, e.g. TPR at 0.1% FPR with fewer than 1000 non-members) or was not computed.

Figures that are themselves lower bounds (the epsilon lower bounds) have no interval:
their value is the bound, so they block above the limit and pass otherwise. A check
over several figures takes the worst (blocked > inconclusive > pass); with
``attack = "strongest"`` every attack is judged and the worst one decides.

Overall: ``blocked`` if any check blocks, else ``inconclusive`` if any check is
inconclusive, else ``pass``. Exit codes: 0 release (pass, or inconclusive under
``on_inconclusive = "pass"``), 1 blocked (including inconclusive under the default
``on_inconclusive = "block"``). Missing or invalid input raises (the CLI exits 2): the
gate fails closed and never guesses.

The rule table :data:`RULES` maps each policy key to the figure it reads; adding a key
is one :class:`Rule` entry.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .report.schema import audit_entry, pct, validate_report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from .audit.result import AuditResult

__all__ = [
    "EXIT_BLOCKED",
    "EXIT_RELEASE",
    "GateDecision",
    "ReleasePolicy",
    "RULES",
    "Rule",
    "evaluate_report",
    "evaluate_result",
    "example_policy_path",
]

EXIT_RELEASE = 0
EXIT_BLOCKED = 1
VERDICTS = ("pass", "inconclusive", "blocked")  # by severity
ON_INCONCLUSIVE = ("block", "pass")
STRONGEST = "strongest"
OPTION_KEYS = ("attack", "confidence", "on_inconclusive")


# ---------------------------------------------------------------- the rule table


@dataclass(frozen=True)
class Reading:
    """One figure read from an audit.

    ``low``/``high`` are the interval ends (NaN when the figure has none); for a figure
    that is itself a lower bound (``lower_bound=True``) ``value`` is that bound.
    ``source`` names the attack or the privacy figure it came from.
    """

    source: str
    value: float
    low: float
    high: float
    confidence: float
    lower_bound: bool = False
    note: str = ""


@dataclass(frozen=True)
class Rule:
    """A policy key and the figure(s) of the final audit it limits.

    Attributes:
        key: the policy key holding the limit (e.g. ``"max_auc"``).
        label: the figure in words; ``{fpr}`` is filled in for per-FPR rules.
        limits: allowed range ``(lo, hi)`` of the limit itself.
        attack_figure: for attack figures, ``(metrics_dict, fpr) -> estimate dict`` of one
            attack's ``AttackMetrics.to_dict()``; judged per attack.
        privacy_figures: for privacy figures, names in the final audit's ``extras["privacy"]``.
        lower_bound: the figures are lower bounds (value only), not intervals.
        per_fpr: the limit is a table ``{fpr: limit}`` with one check per FPR level.
    """

    key: str
    label: str
    limits: tuple[float, float]
    attack_figure: Callable[[dict, float | None], dict] | None = None
    privacy_figures: tuple[str, ...] = ()
    lower_bound: bool = False
    per_fpr: bool = False


def _tpr_figure(metrics: dict, fpr: float | None) -> dict:
    return metrics["tpr_at_fpr"].get(repr(float(fpr)), {"value": None, "note": f"TPR at {pct(fpr)} FPR not measured"})


RULES: tuple[Rule, ...] = (
    Rule("max_auc", "AUC", (0.5, 1.0), attack_figure=lambda m, _: m["auc"]),
    Rule("max_tpr_at_fpr", "TPR at {fpr} FPR", (0.0, 1.0), attack_figure=_tpr_figure, per_fpr=True),
    Rule("max_advantage", "membership advantage", (0.0, 1.0), attack_figure=lambda m, _: m["advantage"]),
    Rule(
        "max_epsilon_lower_bound",
        "epsilon lower bound",
        (0.0, math.inf),
        privacy_figures=("epsilon_lb_one_run", "epsilon_lb_two_point"),
        lower_bound=True,
    ),
    Rule("max_exposure", "canary exposure (bits)", (0.0, math.inf), privacy_figures=("exposure_max",)),
    Rule("max_extraction_rate", "extraction rate", (0.0, 1.0), privacy_figures=("extraction_rate",)),
)
_RULES_BY_KEY = {rule.key: rule for rule in RULES}


# ---------------------------------------------------------------- policy


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{where} must be a number, got NaN")
    return value


def _in_range(value: Any, limits: tuple[float, float], where: str) -> float:
    value = _number(value, where)
    lo, hi = limits
    if not lo <= value <= hi:
        span = f">= {lo:g}" if math.isinf(hi) else f"between {lo:g} and {hi:g}"
        raise ValueError(f"{where} must be {span}, got {value:g}")
    return value


def _parse_fpr_table(rule: Rule, table: Any) -> dict[float, float]:
    if not isinstance(table, Mapping) or not table:
        raise ValueError(
            f"{rule.key} must be a non-empty table of FPR -> maximum TPR, e.g. {rule.key} = {{ \"0.01\" = 0.05 }}; "
            f"got {table!r}"
        )
    parsed: dict[float, float] = {}
    for raw_fpr, raw_limit in table.items():
        try:
            fpr = float(raw_fpr)
        except (TypeError, ValueError):
            raise ValueError(f"{rule.key}: FPR level {raw_fpr!r} is not a number; write it as a string like \"0.01\"") from None
        if not 0.0 < fpr < 1.0:
            raise ValueError(f"{rule.key}: FPR level {raw_fpr!r} must be between 0 and 1 (exclusive)")
        limit = _in_range(raw_limit, rule.limits, f"{rule.key}[{raw_fpr!r}]")
        if limit < fpr:
            raise ValueError(
                f"{rule.key}[{raw_fpr!r}] = {limit:g} is below {fpr:g}, the TPR that random guessing reaches at "
                f"{pct(fpr)} FPR: every model would be blocked; use a limit >= {fpr:g}"
            )
        parsed[fpr] = limit
    return dict(sorted(parsed.items()))


class ReleasePolicy:
    """Limits that the final audit must meet before a model is released.

    Args:
        attack: ``"strongest"`` (judge every attack, the worst decides) or an attack name.
        confidence: the confidence level the decision must hold at; the audit's
            intervals must have been computed at this level or higher.
        on_inconclusive: ``"block"`` (default, fail closed) or ``"pass"``.
        **limits: keys of :data:`RULES`, e.g. ``max_auc=0.6``,
            ``max_tpr_at_fpr={0.01: 0.05}``, ``max_epsilon_lower_bound=1.0``.

    Raises:
        ValueError: unknown key (with the closest valid one), bad type or range, or no limits.
    """

    def __init__(
        self,
        *,
        attack: str = STRONGEST,
        confidence: float = 0.95,
        on_inconclusive: str = "block",
        **limits: Any,
    ) -> None:
        if not isinstance(attack, str) or not attack:
            raise ValueError(f"attack must be \"{STRONGEST}\" or an attack name, got {attack!r}")
        if on_inconclusive not in ON_INCONCLUSIVE:
            raise ValueError(f"on_inconclusive must be \"block\" or \"pass\", got {on_inconclusive!r}")
        self.attack = attack
        self.confidence = _number(confidence, "confidence")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), e.g. 0.95; got {self.confidence:g}")
        self.on_inconclusive = on_inconclusive
        self.limits: dict[str, Any] = {}
        for key, value in limits.items():
            rule = _RULES_BY_KEY.get(key)
            if rule is None:
                raise ValueError(f"unknown policy key {key!r}{_suggest(key, list(OPTION_KEYS) + list(_RULES_BY_KEY))}")
            if value is None:
                continue
            self.limits[key] = _parse_fpr_table(rule, value) if rule.per_fpr else _in_range(value, rule.limits, key)
        if not self.limits:
            raise ValueError(f"the policy sets no limit; set at least one of {', '.join(_RULES_BY_KEY)}")

    # -------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> "ReleasePolicy":
        """A policy from a dict with the TOML file's keys (FPR table keys may be strings)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a table of policy keys, got {type(data).__name__}")
        try:
            return cls(**dict(data))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "ReleasePolicy":
        """Read a policy file (see ``docs/gate.md`` and :func:`example_policy_path`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not valid TOML, or an invalid policy (the message names the key).
        """
        path = Path(path)
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"policy file {path} does not exist; start from {example_policy_path()}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"policy file {path} is not valid TOML: {err}") from None
        return cls.from_dict(data, source=f"policy {path}")

    @classmethod
    def example(cls) -> "ReleasePolicy":
        """The commented example policy shipped with mia_guard."""
        return cls.from_toml(example_policy_path())

    def to_dict(self) -> dict:
        """The policy as a TOML/JSON-able dict (FPR table keys as strings)."""
        out: dict[str, Any] = {"attack": self.attack, "confidence": self.confidence, "on_inconclusive": self.on_inconclusive}
        for key, value in self.limits.items():
            out[key] = {repr(f): v for f, v in value.items()} if isinstance(value, dict) else value
        return out

    def __getattr__(self, name: str) -> Any:
        """Limits read as attributes (``policy.max_auc``); ``None`` when the policy does not set one."""
        if name in _RULES_BY_KEY:
            return self.__dict__.get("limits", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReleasePolicy) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"ReleasePolicy({args})"

    # -------------------------------------------------------- compatibility with an audit
    @property
    def fprs(self) -> list[float]:
        """FPR levels the policy limits TPR at."""
        return sorted({f for rule in RULES if rule.per_fpr for f in self.limits.get(rule.key, {})})

    def check_compatible(self, *, fprs: Any, confidence: float) -> None:
        """Raise ``ValueError`` unless audits at ``fprs`` and ``confidence`` can be judged.

        Call it before training (e.g. with ``Auditor.fprs`` and ``Auditor.confidence``) to
        learn early that the policy asks for an FPR the audit does not measure, or for a
        higher confidence than its intervals have. ``fprs=None`` skips the FPR check.
        """
        if confidence + 1e-12 < self.confidence:
            raise ValueError(
                f"the policy requires {self.confidence:.3g} confidence but the audit's intervals are "
                f"{confidence:.3g} intervals; audit with Auditor(confidence={self.confidence:g}) or lower the "
                "policy's confidence"
            )
        if fprs is None:
            return
        measured = [float(f) for f in fprs]
        missing = [f for f in self.fprs if not any(math.isclose(f, m, rel_tol=1e-9) for m in measured)]
        if missing:
            raise ValueError(
                f"the policy limits TPR at FPR {', '.join(pct(f) for f in missing)} but the audit measured TPR only at "
                f"{', '.join(pct(f) for f in sorted(measured)) or 'no FPR'}; add the level to Auditor(fprs=...) or "
                "remove it from max_tpr_at_fpr"
            )


def example_policy_path() -> Path:
    """Path of the commented example policy shipped in ``mia_guard/data/release_policy.toml``."""
    return Path(__file__).with_name("data") / "release_policy.toml"


# ---------------------------------------------------------------- decision


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


# ---------------------------------------------------------------- evaluation


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
