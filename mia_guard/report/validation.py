"""Strict checks of a report document, and of one audit record, before anything is decided on it.

The release gate reads figures a CI job acts on, so a report is checked field by field
against the schema (:mod:`mia_guard.report.schema`) and against what the figures mean:

* every field has its type (a number is a JSON number, not text or ``true``);
* figures are finite and in range: AUC, TPR, advantage and rates in [0, 1]; losses,
  ε lower bounds and exposure >= 0;
* an interval holds its value: ``low <= value <= high``; an attack figure with a value
  has an interval; an unresolvable figure (``value`` null) has none;
* every attack interval states its confidence, a number equal to the report's;
* audits are in strictly increasing step order and ``final.step`` names the last one;
* counts agree: canary classes add up, each attack's member / non-member counts plus
  the invalid canaries make the canary count, invalid indices are distinct and in range.

A violation raises :class:`ReportError` (a ``ValueError``) whose message starts each
problem with the path of the bad field, e.g. ``audits[1].metrics.loss.auc.value``.
Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)

#: Figures of ``extras["privacy"]`` that are checked when present, with their range.
PRIVACY_FIGURES: dict[str, tuple[float, float]] = {
    "epsilon_lb_one_run": NON_NEGATIVE,
    "epsilon_lb_two_point": NON_NEGATIVE,
    "exposure_max": NON_NEGATIVE,
    "exposure_mean": NON_NEGATIVE,
    "extraction_rate": UNIT,
    "extraction_rate_nonmember": UNIT,
}
#: Problems listed in one error message at most.
MAX_PROBLEMS = 5
_MISSING = object()


class ReportError(ValueError):
    """A report (or audit record) that must not be judged; ``problems`` start with the field's path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        super().__init__(
            f"{source} is malformed: {shown}{more}. Regenerate it from history.json with `mia-guard report RUN_DIR`; "
            "a report must not be edited by hand"
        )


@dataclass(frozen=True)
class AuditContext:
    """What an audit record is checked against; ``None`` skips the checks that need it.

    Attributes:
        confidence: the level every interval must state (the report's ``confidence``);
            ``None`` takes the level of the record's first interval.
        fprs: the FPR levels each attack's TPR table must hold exactly.
        count, members, non_members: the canary counts (``report["canaries"]``).
    """

    confidence: float | None = None
    fprs: tuple[float, ...] | None = None
    count: int | None = None
    members: int | None = None
    non_members: int | None = None


def path_of(parent: str, key: Any) -> str:
    """``parent`` extended by ``key``: ``a[0]``, ``a.b``, or ``a['0.01']`` for keys that are not names."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)
    if key.isidentifier():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


class _Checker:
    """Collects problems; each ``check`` method returns the checked value or ``None`` when it is bad."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, problem: str) -> None:
        self.problems.append(f"{path} {problem}")

    def obj(self, value: Any, path: str) -> dict | None:
        if value is _MISSING:
            return self.bad(path, "is missing")
        if not isinstance(value, Mapping):
            return self.bad(path, f"must be an object, got {_shown(value)}")
        return dict(value)

    def lst(self, value: Any, path: str) -> list | None:
        if value is _MISSING:
            return self.bad(path, "is missing")
        if not isinstance(value, list):
            return self.bad(path, f"must be a list, got {_shown(value)}")
        return value

    def text(self, value: Any, path: str, *, nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            return self.bad(path, "is missing" if value is _MISSING else f"must be text, got {_shown(value)}")
        return value

    def integer(self, value: Any, path: str, low: int = 0) -> int | None:
        if value is _MISSING:
            return self.bad(path, "is missing")
        if isinstance(value, bool) or not isinstance(value, int):
            return self.bad(path, f"must be an integer, got {_shown(value)}")
        if value < low:
            return self.bad(path, f"must be >= {low}, got {value}")
        return value

    def real(self, value: Any, path: str, bounds: tuple[float, float] = (-math.inf, math.inf), *,
             nullable: bool = False, open_unit: bool = False) -> float | None:
        if value is None and nullable:
            return None
        if value is _MISSING:
            return self.bad(path, "is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.bad(path, f"must be a number, got {_shown(value)}")
        value = float(value)
        if not math.isfinite(value):
            return self.bad(path, f"must be a finite number, got {value}")
        lo, hi = bounds
        if open_unit and not 0.0 < value < 1.0:
            return self.bad(path, f"must be between 0 and 1 (exclusive), got {value:g}")
        if not lo <= value <= hi:
            span = f">= {lo:g}" if math.isinf(hi) else f"in [{lo:g}, {hi:g}]"
            return self.bad(path, f"must be {span}, got {value:g}")
        return value

    def confidence(self, value: Any, path: str, expected: float | None) -> float | None:
        level = self.real(value, path, open_unit=True)
        if level is not None and expected is not None and not math.isclose(level, expected, rel_tol=1e-9):
            self.bad(path, f"is {level:g} but the report's intervals are {expected:g} intervals ('confidence')")
            return None
        return level

    def estimate(self, est: Any, path: str, bounds: tuple[float, float], confidence: float | None, *,
                 interval_required: bool, confidence_required: bool = True) -> float | None:
        """An ``{"value", "low", "high", "confidence", "note"}`` estimate; returns its confidence level."""
        est = self.obj(est, path)
        if est is None:
            return None
        before = len(self.problems)
        value, low, high = (self.real(est.get(k, _MISSING), path_of(path, k), bounds, nullable=True)
                            for k in ("value", "low", "high"))
        level = None
        if confidence_required or est.get("confidence") is not None:
            level = self.confidence(est.get("confidence", _MISSING), path_of(path, "confidence"), confidence)
        if "note" in est:
            self.text(est["note"], path_of(path, "note"))
        if len(self.problems) == before:
            self.interval(path, value, low, high, required=interval_required)
        return level

    def interval(self, path: str, value: float | None, low: float | None, high: float | None, *,
                 required: bool) -> None:
        """``low <= value <= high``; a value without interval only where ``required`` is false."""
        if value is None:
            if low is not None or high is not None:
                self.bad(path, "has an interval but no value (an unresolvable figure has neither)")
        elif low is None or high is None:
            if required or (low is None) != (high is None):
                self.bad(path, f"has a value ({value:g}) but no interval (low/high are null); the gate never "
                               "judges a figure on its point estimate")
        elif not low <= value <= high:
            self.bad(path, f"value {value:g} lies outside its interval [{low:g}, {high:g}]")


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:40]}... ({type(value).__name__})" if len(text) > 40 else f"{text} ({type(value).__name__})"


# ---------------------------------------------------------------------------- audit records


def check_audit_entry(entry: Any, path: str = "audit", context: AuditContext = AuditContext(),
                      source: str = "the audit") -> dict:
    """Check one audit record (:func:`mia_guard.report.schema.audit_entry`); returns it unchanged.

    Raises:
        ReportError: the record is malformed (the message names each bad field by path).
    """
    checker = _Checker()
    _audit(checker, entry, path, context)
    if checker.problems:
        raise ReportError(source, checker.problems)
    return entry


def _audit(c: _Checker, entry: Any, path: str, ctx: AuditContext) -> None:
    entry = c.obj(entry, path)
    if entry is None:
        return
    at = partial(path_of, path)
    c.integer(entry.get("step", _MISSING), at("step"))
    c.real(entry.get("timestamp", _MISSING), at("timestamp"))
    level = ctx.confidence
    for key in ("member_nll", "nonmember_nll"):
        found = c.estimate(entry.get(key, _MISSING), at(key), NON_NEGATIVE, level, interval_required=False)
        level = level if level is not None else found
    metrics = c.obj(entry.get("metrics", _MISSING), at("metrics")) or {}
    counts = set()
    for name, metric in metrics.items():
        counts.add(_attack_metrics(c, metric, path_of(at("metrics"), name), name, level, ctx))
    counts.discard(None)
    skipped = c.obj(entry.get("skipped", _MISSING), at("skipped")) or {}
    for name, reason in skipped.items():
        c.text(reason, path_of(at("skipped"), name))
        if name in metrics:
            c.bad(path_of(at("skipped"), name), "names an attack that also has metrics in this audit")
    failed = c.obj(entry.get("failed_attacks", {}), at("failed_attacks")) or {}
    for name, reason in failed.items():
        c.text(reason, path_of(at("failed_attacks"), name))
        if name in metrics or name in skipped:
            c.bad(path_of(at("failed_attacks"), name), "names an attack that also has metrics or a skip reason")
    for i, note in enumerate(c.lst(entry.get("notes", _MISSING), at("notes")) or []):
        c.text(note, path_of(at("notes"), i))
    invalid = _invalid_canaries(c, entry.get("invalid_canaries", _MISSING), at("invalid_canaries"), ctx)
    _counts_agree(c, counts, invalid, at("metrics"), ctx)
    extras = c.obj(entry.get("extras", _MISSING), at("extras"))
    if extras is not None and "privacy" in extras:
        _privacy(c, extras["privacy"], path_of(at("extras"), "privacy"))


def _attack_metrics(c: _Checker, metric: Any, path: str, name: str, level: float | None,
                    ctx: AuditContext) -> tuple[int, int] | None:
    metric = c.obj(metric, path)
    if metric is None:
        return None
    at = partial(path_of, path)
    attack = c.text(metric.get("attack", _MISSING), at("attack"))
    if attack is not None and attack != name:
        c.bad(at("attack"), f"is {attack!r} but the entry is listed under {name!r}")
    c.estimate(metric.get("auc", _MISSING), at("auc"), UNIT, level, interval_required=True)
    c.estimate(metric.get("advantage", _MISSING), at("advantage"), UNIT, level, interval_required=True)
    table = c.obj(metric.get("tpr_at_fpr", _MISSING), at("tpr_at_fpr")) or {}
    levels = []
    for key, est in table.items():
        fpr = _fpr_key(key)
        if fpr is None:
            c.bad(path_of(at("tpr_at_fpr"), key), "is not an FPR level between 0 and 1 (e.g. '0.01')")
            continue
        levels.append(fpr)
        c.estimate(est, path_of(at("tpr_at_fpr"), key), UNIT, level, interval_required=True)
    if ctx.fprs is not None and table and not _same_levels(levels, ctx.fprs):
        c.bad(at("tpr_at_fpr"), f"holds FPR levels {sorted(levels)} but the report measured {sorted(ctx.fprs)} ('fprs')")
    for i, warning in enumerate(c.lst(metric.get("warnings", _MISSING), at("warnings")) or []):
        c.text(warning, path_of(at("warnings"), i))
    n_members = c.integer(metric.get("n_members", _MISSING), at("n_members"), low=1)
    n_nonmembers = c.integer(metric.get("n_nonmembers", _MISSING), at("n_nonmembers"), low=1)
    if n_members is None or n_nonmembers is None:
        return None
    return n_members, n_nonmembers


def _fpr_key(key: str) -> float | None:
    try:
        fpr = float(key)
    except (TypeError, ValueError):
        return None
    return fpr if 0.0 < fpr < 1.0 else None


def _same_levels(found: list[float], expected: tuple[float, ...]) -> bool:
    matched = all(any(math.isclose(f, e, rel_tol=1e-9) for e in expected) for f in found)
    return matched and len(found) == len(expected)


def _invalid_canaries(c: _Checker, value: Any, path: str, ctx: AuditContext) -> list[int] | None:
    indices = c.lst(value, path)
    if indices is None:
        return None
    good = [c.integer(index, path_of(path, i)) for i, index in enumerate(indices)]
    if any(i is None for i in good):
        return None
    if len(set(good)) != len(good):
        c.bad(path, "lists a canary more than once")
        return None
    if ctx.count is not None and good and max(good) >= ctx.count:
        c.bad(path, f"holds index {max(good)} but the report has {ctx.count} canaries (indices 0..{ctx.count - 1})")
        return None
    return good


def _counts_agree(c: _Checker, counts: set, invalid: list[int] | None, path: str, ctx: AuditContext) -> None:
    """Every attack evaluated the same valid canaries, and they add up with the invalid ones."""
    if len(counts) > 1:
        c.bad(path, f"disagree on the canaries evaluated (n_members, n_nonmembers): {sorted(counts)}")
        return
    if not counts or invalid is None or ctx.count is None:
        return
    (n_members, n_nonmembers), = counts
    if n_members + n_nonmembers + len(invalid) != ctx.count:
        c.bad(path_of(path, "*"), f"n_members {n_members} + n_nonmembers {n_nonmembers} + {len(invalid)} invalid "
                                  f"canaries != {ctx.count} canaries in the report")
    elif ctx.members is not None and (n_members > ctx.members or n_nonmembers > (ctx.non_members or 0)):
        c.bad(path_of(path, "*"), f"n_members {n_members} / n_nonmembers {n_nonmembers} exceed the report's "
                                  f"{ctx.members} members / {ctx.non_members} non-members")


def _privacy(c: _Checker, group: Any, path: str) -> None:
    group = c.obj(group, path)
    if group is None:
        return
    if "confidence" in group:
        c.real(group["confidence"], path_of(path, "confidence"), open_unit=True)
    for name, bounds in PRIVACY_FIGURES.items():
        if name not in group:
            continue
        figure, where = group[name], path_of(path, name)
        if isinstance(figure, Mapping):
            if "value" not in figure:
                c.bad(where, "has no 'value'")
                continue
            c.estimate({"low": None, "high": None, **figure}, where, bounds, None, interval_required=False,
                       confidence_required=False)
        elif figure is None or (isinstance(figure, (int, float)) and not isinstance(figure, bool)):
            before = len(c.problems)
            value, low, high = (
                c.real(group.get(key), path_of(path, key), bounds, nullable=True)
                for key in (name, f"{name}_low", f"{name}_high")
            )
            if len(c.problems) == before:
                c.interval(where, value, low, high, required=False)
        else:
            c.bad(where, f"must be a number, null or a figure object, got {_shown(figure)}")


# ---------------------------------------------------------------------------- whole reports


def check_report_document(data: dict, source: str = "report") -> dict:
    """Check every field of a report whose format and schema version are already known good.

    Raises:
        ReportError: the message names each bad field by path.
    """
    c = _Checker()
    level = c.real(data.get("confidence", _MISSING), "confidence", open_unit=True)
    fprs = c.lst(data.get("fprs", _MISSING), "fprs")
    fprs = [c.real(f, path_of("fprs", i), open_unit=True) for i, f in enumerate(fprs or [])] if fprs is not None else None
    canaries = _canaries(c, data.get("canaries", _MISSING))
    for key in ("created", "mia_guard_version"):
        if key in data:
            c.text(data[key], key)
    for key in ("gate", "run_info"):
        if data.get(key) is not None:
            c.obj(data[key], key)
    context = AuditContext(
        confidence=level,
        fprs=tuple(fprs) if fprs is not None and None not in fprs else None,
        **canaries,
    )
    audits = c.lst(data.get("audits", _MISSING), "audits")
    if audits is not None and not audits:
        c.bad("audits", "is empty: the report holds no audit")
    for i, entry in enumerate(audits or []):
        _audit(c, entry, path_of("audits", i), context)
    steps = [a.get("step") for a in audits or [] if isinstance(a, Mapping)]
    if audits and all(isinstance(s, int) and not isinstance(s, bool) for s in steps) and len(steps) == len(audits):
        if any(b <= a for a, b in zip(steps, steps[1:])):
            c.bad("audits", f"are not in strictly increasing step order (steps {_steps(steps)})")
        _final(c, data.get("final", _MISSING), audits[-1])
    _failed_audits(c, data.get("failed_audits", []))
    if c.problems:
        raise ReportError(source, c.problems)
    return data


def _canaries(c: _Checker, value: Any) -> dict:
    summary = c.obj(value, "canaries")
    if summary is None:
        return {}
    count = c.integer(summary.get("count", _MISSING), "canaries.count", low=1)
    members = c.integer(summary.get("members", _MISSING), "canaries.members")
    non_members = c.integer(summary.get("non_members", _MISSING), "canaries.non_members")
    c.text(summary.get("hash", _MISSING), "canaries.hash", nullable=True)
    if None in (count, members, non_members):
        return {}
    if members + non_members != count:
        c.bad("canaries", f"members {members} + non_members {non_members} != count {count}")
        return {}
    return {"count": count, "members": members, "non_members": non_members}


def _final(c: _Checker, value: Any, last: Mapping) -> None:
    final = c.obj(value, "final")
    if final is None:
        return
    step = c.integer(final.get("step", _MISSING), "final.step")
    if step is not None and step != last["step"]:
        c.bad("final.step", f"is {step} but the last audit of the report is at step {last['step']}")
    strongest = c.text(final.get("strongest_attack", _MISSING), "final.strongest_attack", nullable=True)
    metrics = last.get("metrics")
    if strongest is not None and isinstance(metrics, Mapping) and strongest not in metrics:
        c.bad("final.strongest_attack", f"is {strongest!r}, an attack the final audit did not run")


def _failed_audits(c: _Checker, value: Any) -> None:
    for i, failure in enumerate(c.lst(value, "failed_audits") or []):
        failure = c.obj(failure, path_of("failed_audits", i))
        if failure is not None:
            c.integer(failure.get("step", _MISSING), path_of(path_of("failed_audits", i), "step"))
            c.text(failure.get("reason", _MISSING), path_of(path_of("failed_audits", i), "reason"))


def _steps(steps: list[int]) -> str:
    shown = ", ".join(str(s) for s in steps[:8])
    return shown + (", ..." if len(steps) > 8 else "")
