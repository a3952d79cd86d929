"""The rule table: each policy key, the figure of the final audit it limits, and how a
figure is read (:class:`Reading`). Adding a policy key is one :class:`Rule` entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..report.schema import pct

VERDICTS = ("pass", "inconclusive", "blocked")  # by severity
ON_INCONCLUSIVE = ("block", "pass")
STRONGEST = "strongest"
OPTION_KEYS = ("attack", "confidence", "on_inconclusive", "min_canaries_per_class", "max_invalid_share")


@dataclass(frozen=True)
class Reading:
    """One figure read from an audit.

    ``low``/``high`` are the interval ends (NaN when the figure has none); for a figure
    that is itself a lower bound (``lower_bound=True``) ``value`` is that bound.
    ``source`` names the attack or the privacy figure it came from. ``failed`` holds why
    the figure could not be measured at all (an attack that raised): the reading then has
    no value and fails closed.
    """

    source: str
    value: float
    low: float
    high: float
    confidence: float
    lower_bound: bool = False
    note: str = ""
    failed: str = ""


@dataclass(frozen=True)
class Rule:
    """A policy key and the figure(s) of the final audit it limits.

    Attributes:
        key: the policy key holding the limit (e.g. ``"max_auc"``).
        label: the figure in words; ``{fpr}`` is filled in for per-FPR rules.
        limits: ``(lo, hi)``: a limit must satisfy ``lo <= limit < hi``; ``hi`` is the largest
            value the figure can take (1 for rates and AUC, infinity otherwise), so a limit
            at ``hi`` could never be exceeded and is refused.
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
