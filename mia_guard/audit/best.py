"""The strongest attack of an audit, reported without selection bias.

Picking the attack with the highest AUC out of ``k`` and reporting *its* 95% interval
overstates the evidence: under random labels each interval excludes 0.5 with
probability 5%, so the best of ``k`` does so far more often (before training, the
``mia/best`` curve showed a "signal"; tests/test_best_attack.py measures 22% with 10
independent attacks and 15% with 10 correlated ones, 200 canaries; 2.8% and 2.5% with
the adjustment below). Here the best attack is still the highest AUC point estimate, but its
figures are recomputed at the Šidák-adjusted level ``confidence ** (1 / k)``, which
makes the ``k`` intervals *simultaneous*: with probability at least ``confidence`` all
of them cover their true values at once, so the chosen one does too, whichever it is.
By Šidák's inequality this holds for two-sided intervals of jointly normal estimates
whatever their correlation (exact for independent attacks, conservative for correlated
ones, and most attacks here read the same statistics), so the best attack's intervals
cover 0.5 under random labels at least at the nominal rate.

The point estimate stays the maximum over attacks and is biased upwards under the
null; read the interval, not the point. The selection is stored in
``AuditResult.extras["best_attack"]`` (:meth:`BestAttack.to_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from ..stats.metrics import AttackMetrics

EXTRAS_KEY = "best_attack"


@dataclass(frozen=True)
class BestAttack:
    """The attack with the highest AUC, with figures at a selection-adjusted level.

    Attributes:
        attack: the chosen attack's name.
        candidates: ``k``, the number of attacks it was chosen from.
        confidence: the family-wise level (the audit's confidence).
        per_attack_confidence: ``confidence ** (1 / k)``, the level of ``metrics``' intervals.
        metrics: the chosen attack's metrics at ``per_attack_confidence``.
    """

    attack: str
    candidates: int
    confidence: float
    per_attack_confidence: float
    metrics: AttackMetrics

    def to_dict(self) -> dict:
        return {
            "attack": self.attack,
            "candidates": self.candidates,
            "confidence": self.confidence,
            "per_attack_confidence": self.per_attack_confidence,
            "metrics": self.metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "BestAttack":
        return cls(
            attack=str(data["attack"]),
            candidates=int(data["candidates"]),
            confidence=float(data["confidence"]),
            per_attack_confidence=float(data["per_attack_confidence"]),
            metrics=AttackMetrics.from_dict(data["metrics"]),
        )


def sidak_level(confidence: float, k: int) -> float:
    """Per-test confidence that gives family-wise ``confidence`` over ``k`` tests (Šidák)."""
    if k < 1:
        raise ValueError(f"need at least one attack to select from, got {k}")
    return float(confidence ** (1.0 / k))


def select_best(
    metrics: Mapping[str, AttackMetrics],
    recompute: Callable[[str, float], AttackMetrics],
    confidence: float,
) -> BestAttack | None:
    """The highest-AUC attack of ``metrics`` with its figures recomputed at the Šidák level.

    Args:
        metrics: per attack, the metrics at ``confidence`` (only the AUC point estimates are read).
        recompute: ``recompute(name, level)`` gives attack ``name``'s metrics at ``level``.
        confidence: the family-wise level.

    Returns:
        ``None`` when no attack ran.
    """
    if not metrics:
        return None
    name = max(metrics, key=lambda n: metrics[n].auc.value)
    k = len(metrics)
    level = sidak_level(confidence, k)
    chosen = metrics[name] if k == 1 else recompute(name, level)
    return BestAttack(name, k, confidence, level, chosen)


def best_of(result) -> BestAttack | None:
    """The selection-aware best attack recorded in an :class:`~mia_guard.audit.result.AuditResult`, if any."""
    data = result.extras.get(EXTRAS_KEY)
    return BestAttack.from_dict(data) if data else None
