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

In a run with several named canary sets every tag is under the set's name:
``<set>/<attack>/auc``, ``<set>/loss/member``, ... (TensorBoard ``mia/<set>/...``).

A figure that cannot be resolved (TPR at an FPR below 1 / number of non-members) or an
interval that does not exist is *left out*, never written as NaN: TensorBoard draws NaN
as a gap or a spike depending on the chart, and a missing point reads unambiguously.
The JSONL line lists every left-out figure with the reason under ``"unresolved"``.

Experiment trackers get the same names with the ``mia/`` prefix. MLflow refuses ``@``
and ``%`` in metric names, so its sinks use :func:`portable_tag`, which spells them out
(``mia/loss/tpr@0.1%fpr`` becomes ``mia/loss/tpr_at_0.1pct_fpr``); every other name is
unchanged.
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
    "extraction_rate", "extraction_rate_low", "extraction_rate_high", "extraction_rate_nonmember",
)


def fpr_label(fpr: float) -> str:
    """``0.01 -> "1%"``, ``0.001 -> "0.1%"``: the FPR as it appears in tags."""
    return f"{fpr * 100:g}%"


def portable_tag(tag: str) -> str:
    """``tag`` with the characters some trackers refuse spelled out: ``@`` -> ``_at_``,
    ``%`` -> ``pct_`` (``mia/loss/tpr@1%fpr`` -> ``mia/loss/tpr_at_1pct_fpr``).

    The result uses only letters, digits, ``_ - . /`` and spaces, which MLflow accepts on
    every platform; names without ``@`` or ``%`` come back unchanged.
    """
    return tag.replace("@", "_at_").replace("%", "pct_")


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


def set_prefix(canary_set: str | None) -> str:
    """``"<set>/"`` for a named canary set, ``""`` for a run's only set."""
    return f"{canary_set}/" if canary_set else ""


def audit_scalars(result: AuditResult) -> tuple[dict[str, float], dict[str, str]]:
    """The scalar figures of one audit: ``({tag: value}, {left-out tag: reason})``.

    Tags carry no ``mia/`` prefix (TensorBoard adds it); an audit of a named canary set
    (``result.canary_set``) has its tags under ``<set>/`` (``credentials/loss/auc``).
    Every value is finite.
    """
    out, unresolved = _scalars(result)
    prefix = set_prefix(result.canary_set)
    if not prefix:
        return out, unresolved
    return {prefix + k: v for k, v in out.items()}, {prefix + k: v for k, v in unresolved.items()}


def _scalars(result: AuditResult) -> tuple[dict[str, float], dict[str, str]]:
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
