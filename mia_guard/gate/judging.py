"""One limit judged on the figures it reads: readings from a validated audit record, the
verdict of each on its interval, and the sentence that explains it.

A reading is judged on its interval (:func:`judge`):

* ``blocked``: the lower bound exceeds the limit; ``pass``: the upper bound is at or
  below it; ``inconclusive``: the interval contains it.
* A figure that is itself a lower bound (ε lower bounds) blocks above the limit and
  passes otherwise.
* ``inconclusive`` without failing closed: the figure was measured but cannot be
  resolved (``value`` null, e.g. TPR at 0.1% FPR with fewer than 1000 non-members);
  ``on_inconclusive`` decides what that does.
* ``inconclusive`` failing closed (never releases): the figure was never measured (its
  attack failed) or carries no interval (a point estimate is never judged).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .evidence import record
from .rules import VERDICTS, Reading, Rule


def attack_reading(rule: Rule, fpr: float | None, metrics: Mapping[str, Any], attack: str) -> Reading:
    """The figure ``rule`` limits, read from one attack's validated ``AttackMetrics.to_dict()``."""
    est = rule.attack_figure(metrics, fpr)
    return Reading(
        source=attack,
        value=as_float(est.get("value")),
        low=as_float(est.get("low")),
        high=as_float(est.get("high")),
        confidence=as_float(est.get("confidence")),
        note=str(est.get("note") or ""),
    )


def failed_reading(attack: str, reason: str) -> Reading:
    """An attack that raised at the audit: nothing measured, fails closed."""
    return Reading(attack, math.nan, math.nan, math.nan, math.nan, note=reason, failed=reason)


def privacy_reading(rule: Rule, name: str, privacy: Mapping[str, Any], confidence: float) -> Reading:
    """``privacy[name]`` is a number (its interval, if any, in sibling fields ``<name>_low`` /
    ``<name>_high``) or ``{"value", "low"?, "high"?, "confidence"?, "note"?, "attack"?}``;
    a missing confidence is the audit's ``confidence``."""
    figure = privacy[name]
    if isinstance(figure, Mapping):
        value, low, high = (as_float(figure.get(k)) for k in ("value", "low", "high"))
        level = figure.get("confidence")
        conf = confidence if level is None else float(level)
        note = str(figure.get("note") or "")
        source = f"{name} ({figure['attack']})" if figure.get("attack") else name
    else:
        low, high = as_float(privacy.get(f"{name}_low")), as_float(privacy.get(f"{name}_high"))
        level = privacy.get("confidence")
        value, note, source = as_float(figure), "", name
        conf = confidence if level is None else float(level)
    return Reading(source, value, low, high, conf, lower_bound=rule.lower_bound, note=note)


def as_float(x: Any) -> float:
    return math.nan if x is None else float(x)


def has_interval(r: Reading) -> bool:
    return not (math.isnan(r.low) or math.isnan(r.high))


def judge(r: Reading, limit: float) -> tuple[str, bool]:
    """``(verdict, fail_closed)`` of one reading against ``limit``."""
    if r.failed:
        return "inconclusive", True
    if math.isnan(r.value):
        return "inconclusive", False
    if r.lower_bound:
        return ("blocked" if r.value > limit else "pass"), False
    if not has_interval(r):
        return "inconclusive", True
    if r.low > limit:
        return "blocked", False
    if r.high <= limit:
        return "pass", False
    return "inconclusive", False


def severity(verdict: str, fail_closed: bool, r: Reading) -> tuple[int, int, float]:
    """Order readings so the worst comes last: by verdict, failing closed, then the deciding bound."""
    if verdict == "blocked":
        bound = r.value if r.lower_bound else r.low
    elif math.isnan(r.value) or not has_interval(r) or r.lower_bound:
        bound = math.inf if math.isnan(r.value) else r.value
    else:
        bound = r.high
    return VERDICTS.index(verdict), int(fail_closed), bound


def reason(verdict: str, label: str, key: str, limit: float, r: Reading, rule: Rule) -> str:
    """The sentence explaining one reading's verdict."""
    who = f"attack {r.source!r}" if rule.attack_figure is not None else r.source
    if r.failed:
        return (f"inconclusive: {label} of {who} was not measured: the attack failed ({r.failed}); "
                f"limit {key} = {limit:g} cannot be judged and the gate fails closed")
    if math.isnan(r.value):
        return f"inconclusive: {label} of {who} cannot be resolved ({r.note or 'no value'}); limit {key} = {limit:g}"
    if r.lower_bound:
        relation = ">" if verdict == "blocked" else "<="
        return f"{verdict}: {label} of {who} is {r.value:.3g} (already a lower bound) {relation} limit {key} = {limit:g}"
    if not has_interval(r):
        return (f"inconclusive: {label} of {who} is {r.value:.3f} with no interval reported; the gate never judges "
                f"a point estimate (limit {key} = {limit:g}) and fails closed: compute the figure with its interval")
    figure = f"{label} of {who} is {r.value:.3f} [{r.low:.3f}, {r.high:.3f}] ({r.confidence:.0%} interval)"
    if verdict == "blocked":
        return f"blocked: {figure}; lower bound {r.low:.3f} > limit {key} = {limit:g}"
    if verdict == "pass":
        return f"pass: {figure}; upper bound {r.high:.3f} <= limit {key} = {limit:g}"
    return f"inconclusive: {figure} contains the limit {key} = {limit:g}; more canaries would narrow it"


def reading_record(key: str, label: str, limit: float, verdict: str, r: Reading, text: str,
                   fail_closed: bool) -> dict:
    """The check record of a limit decided by reading ``r``."""

    def plain(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return record(key, label, limit, verdict, text, source=r.source, value=plain(r.value), low=plain(r.low),
                  high=plain(r.high), fail_closed=fail_closed)
