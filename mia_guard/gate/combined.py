"""One release decision over several canary sets (torch-free).

A run that audits several canary sets (``MIAAuditCallback({"credentials": a, "texts":
b})``) gets one decision: each set's final audit is judged against the same policy, and

* the verdict is the worst of the sets' (``blocked`` > ``inconclusive`` > ``pass``): the
  gate **blocks when any set blocks**;
* the exit code is 1 when any set's decision has exit code 1 (so an inconclusive set
  blocks under the default ``on_inconclusive = "block"``), else 0;
* every reason and check names its set (``[credentials] blocked: AUC ...``).
"""

from __future__ import annotations

import os
from typing import Mapping

from .decision import EXIT_BLOCKED, EXIT_RELEASE, GateDecision, evaluate_report
from .policy import ReleasePolicy
from .rules import VERDICTS


def combine_decisions(decisions: Mapping[str, GateDecision]) -> GateDecision:
    """The decision covering every set of ``decisions`` (set name -> that set's decision)."""
    if not decisions:
        raise ValueError("combine_decisions needs the decision of at least one canary set")
    worst = max(VERDICTS.index(d.verdict) for d in decisions.values())
    first = next(iter(decisions.values()))
    return GateDecision(
        verdict=VERDICTS[worst],
        reasons=[f"[{name}] {reason}" for name, d in decisions.items() for reason in d.reasons],
        exit_code=EXIT_BLOCKED if any(d.exit_code == EXIT_BLOCKED for d in decisions.values()) else EXIT_RELEASE,
        policy=dict(first.policy),
        step=max(d.step for d in decisions.values()),
        checks=[{**check, "canary_set": name} for name, d in decisions.items() for check in d.checks],
    )


def evaluate_report_set(policy: ReleasePolicy, path: str | os.PathLike) -> GateDecision:
    """Judge every canary set of the report set at ``path`` and combine (see the module docstring).

    Raises:
        FileNotFoundError, ValueError: as :func:`mia_guard.report.report_set.load_report_set`
            and :func:`evaluate_report` (the gate fails closed).
    """
    from ..report.report_set import load_report_set

    _, reports = load_report_set(path)
    return combine_decisions({name: evaluate_report(policy, report) for name, report in reports.items()})
