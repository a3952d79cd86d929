"""The scalar figures of one audit, as every sink names them.

Scalar figures (the same numbers in every sink, see :func:`audit_scalars`), with
``<pct>`` the FPR in percent (``1%`` for 0.01, ``0.1%`` for 0.001):

==================================  ==========================================================
tag (TensorBoard adds ``mia/``)     value
==================================  ==========================================================
``<attack>/auc``                    AUC of the attack's scores, members vs non-members
``<attack>/auc_low``, ``_high``     its confidence interval (DeLong)
``<attack>/tpr@<pct>fpr``           TPR at that FPR, with ``_low``/``_high`` (Clopper-Pearson)
``<attack>/advantage``              max TPR - FPR, with ``_low``/``_high`` (bootstrap)
``loss/member``, ``loss/nonmember`` mean per-canary NLL of each group, with ``_low``/``_high``
``best/auc``, ``best/tpr@<pct>fpr``  the attack with the highest AUC, its intervals widened for
                                    the number of attacks it was chosen from (Šidák;
                                    :mod:`mia_guard.audit.best`)
``privacy/<figure>``                 the floats of ``extras["privacy"]`` named in
                                    :data:`PRIVACY_SCALARS` (ε lower bounds, exposure,
                                    extraction rate), when the audit computed them
``audit/seconds``                   wall seconds of this audit (scoring to history write)
``audit/overhead``                  all audits so far / training time so far (from the
                                    first training step on; see callbacks/cadence.py)
==================================  ==========================================================

A figure that cannot be resolved (TPR at an FPR below 1 / number of non-members) or an
interval that does not exist is *left out*, never written as NaN: TensorBoard draws NaN
as a gap or a spike depending on the chart, and a missing point reads unambiguously.
The JSONL line lists every left-out figure with the reason under ``"unresolved"``.
"""

from __future__ import annotations

import math

from ...audit.best import best_of
from ...audit.result import AuditResult
from ...stats.estimate import Estimate

#: Figures of ``extras["privacy"]`` written as ``privacy/<name>`` (see docs/privacy.md).
PRIVACY_SCALARS = (
    "epsilon_lb_one_run", "epsilon_lb_two_point",
    "exposure_max", "exposure_max_low", "exposure_max_high", "exposure_mean",
    "extraction_rate", "extraction_rate_low", "extraction_rate_high",
)


def fpr_label(fpr: float) -> str:
    """``0.01 -> "1%"``, ``0.001 -> "0.1%"``: the FPR as it appears in tags."""
    return f"{fpr * 100:g}%"


def _estimate_scalars(tag: str, est: Estimate, out: dict[str, float], unresolved: dict[str, str]) -> None:
    if not est.resolvable:
        unresolved[tag] = est.note or "not resolvable"
        return
    out[tag] = float(est.value)
    if math.isnan(est.low) or math.isnan(est.high):
        unresolved[f"{tag}_low"] = unresolved[f"{tag}_high"] = est.note or "no interval"
        return
    out[f"{tag}_low"] = float(est.low)
    out[f"{tag}_high"] = float(est.high)


def audit_scalars(result: AuditResult) -> tuple[dict[str, float], dict[str, str]]:
    """The scalar figures of one audit: ``({tag: value}, {left-out tag: reason})``.

    Tags carry no ``mia/`` prefix (TensorBoard adds it). Every value is finite.
    """
    out: dict[str, float] = {}
    unresolved: dict[str, str] = {}
    for name, m in result.metrics.items():
        _estimate_scalars(f"{name}/auc", m.auc, out, unresolved)
        for fpr, est in sorted(m.tpr_at_fpr.items()):
            _estimate_scalars(f"{name}/tpr@{fpr_label(fpr)}fpr", est, out, unresolved)
        _estimate_scalars(f"{name}/advantage", m.advantage, out, unresolved)
    _estimate_scalars("loss/member", result.member_nll, out, unresolved)
    _estimate_scalars("loss/nonmember", result.nonmember_nll, out, unresolved)
    best = result.best_attack()
    if best is not None:
        selected = best_of(result)  # figures at the selection-adjusted level (audit/best.py)
        m = selected.metrics if selected is not None else result.metrics[best]
        _estimate_scalars("best/auc", m.auc, out, unresolved)
        for fpr, est in sorted(m.tpr_at_fpr.items()):
            _estimate_scalars(f"best/tpr@{fpr_label(fpr)}fpr", est, out, unresolved)
    privacy = result.extras.get("privacy") or {}
    for name in PRIVACY_SCALARS:
        value = privacy.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"privacy/{name}"] = float(value)
    cost = result.extras.get("cost") or {}
    for name in ("seconds", "overhead"):
        value = cost.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"audit/{name}"] = float(value)
    return out, unresolved
