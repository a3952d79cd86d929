"""Where audit figures go while training runs: TensorBoard event files and a JSONL log.

Both sinks read :class:`~mia_guard.audit.result.AuditResult` objects and nothing else;
they are created lazily and only on the process that writes (rank 0), so other ranks
never open a file. TensorBoard (``torch.utils.tensorboard``) is imported on first write.

Scalar figures (the same numbers in both sinks, see :func:`audit_scalars`), with
``<pct>`` the FPR in percent (``1%`` for 0.01, ``0.1%`` for 0.001):

==================================  ==========================================================
tag (TensorBoard adds ``mia/``)     value
==================================  ==========================================================
``<attack>/auc``                    AUC of the attack's scores, members vs non-members
``<attack>/auc_low``, ``_high``     its confidence interval (DeLong)
``<attack>/tpr@<pct>fpr``           TPR at that FPR, with ``_low``/``_high`` (Clopper-Pearson)
``<attack>/advantage``              max TPR - FPR, with ``_low``/``_high`` (bootstrap)
``loss/member``, ``loss/nonmember`` mean per-canary NLL of each group, with ``_low``/``_high``
``best/auc``, ``best/tpr@<pct>fpr``  the figures of the attack with the highest AUC
``privacy/<figure>``                 the floats of ``extras["privacy"]`` named in
                                    :data:`PRIVACY_SCALARS` (ε lower bounds, exposure,
                                    extraction rate), when the audit computed them
==================================  ==========================================================

A figure that cannot be resolved (TPR at an FPR below 1 / number of non-members) or an
interval that does not exist is *left out*, never written as NaN: TensorBoard draws NaN
as a gap or a spike depending on the chart, and a missing point reads unambiguously.
The JSONL line lists every left-out figure with the reason under ``"unresolved"``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._io import atomic_write_text
from ..audit.result import AuditHistory, AuditResult
from ..stats.metrics import Estimate

#: File name suffix of mia_guard's TensorBoard event files (the Trainer's own sit beside them).
EVENT_FILE_SUFFIX = ".mia_guard"

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
        m = result.metrics[best]
        _estimate_scalars("best/auc", m.auc, out, unresolved)
        for fpr, est in sorted(m.tpr_at_fpr.items()):
            _estimate_scalars(f"best/tpr@{fpr_label(fpr)}fpr", est, out, unresolved)
    privacy = result.extras.get("privacy") or {}
    for name in PRIVACY_SCALARS:
        value = privacy.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"privacy/{name}"] = float(value)
    return out, unresolved


def custom_scalar_layout(attacks: Sequence[str], fprs: Sequence[float]) -> dict:
    """TensorBoard custom-scalars layout: per attack, AUC with its CI band and the TPR curves.

    ``Margin`` charts take exact tags (value, lower, upper); ``Multiline`` charts take
    regular expressions, so tags are escaped.
    """
    charts: dict[str, list] = {}
    for name in attacks:
        charts[f"{name}: AUC with CI"] = ["Margin", [f"mia/{name}/auc", f"mia/{name}/auc_low", f"mia/{name}/auc_high"]]
        tpr_tags = [re.escape(f"mia/{name}/tpr@{fpr_label(f)}fpr") + "$" for f in fprs]
        charts[f"{name}: TPR at fixed FPR"] = ["Multiline", tpr_tags]
        for f in fprs:
            tag = f"mia/{name}/tpr@{fpr_label(f)}fpr"
            charts[f"{name}: TPR@{fpr_label(f)}FPR with CI"] = ["Margin", [tag, f"{tag}_low", f"{tag}_high"]]
    charts["best attack: AUC with CI"] = ["Margin", ["mia/best/auc", "mia/best/auc_low", "mia/best/auc_high"]]
    charts["canary loss: members vs non-members"] = ["Multiline", [r"mia/loss/(non)?member$"]]
    return {"mia_guard leakage": charts}


def decision_markdown(decision: Any) -> str:
    """A gate decision (``verdict``, ``reasons``) as Markdown for a TensorBoard text panel."""
    lines = [f"**release gate: {decision.verdict}**"]
    lines += [f"- {reason}" for reason in decision.reasons]
    return "\n".join(lines)


class TensorBoardSink:
    """Writes audits into ``log_dir`` as TensorBoard events (``mia/...`` tags).

    The ``SummaryWriter`` is created on the first write, so constructing a sink on a
    process that never writes opens nothing. Event files end in :data:`EVENT_FILE_SUFFIX`;
    pointing it at the Trainer's logging directory puts the leakage curves in the same
    TensorBoard run as the training loss.

    Args:
        log_dir: the TensorBoard logging directory.
        attacks: attack names for the custom-scalars layout (written once, with the first audit).
        fprs: FPR levels for the layout.
        is_member: canary membership ``[N]`` (True = inserted), for the score histograms.
    """

    def __init__(
        self, log_dir: str | os.PathLike, attacks: Sequence[str], fprs: Sequence[float], is_member: np.ndarray
    ) -> None:
        self.log_dir = Path(log_dir)
        self.attacks = list(attacks)
        self.fprs = list(fprs)
        self.is_member = np.asarray(is_member, dtype=bool)
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError(
                    f"TensorBoard logging needs the tensorboard package ({err}); pip install tensorboard, "
                    "or turn TensorBoard off (MIAAuditCallback(tensorboard=False))"
                ) from err

            self._writer = SummaryWriter(log_dir=str(self.log_dir), filename_suffix=EVENT_FILE_SUFFIX)
            self._writer.add_custom_scalars(custom_scalar_layout(self.attacks, self.fprs))
        return self._writer

    def write_audit(self, result: AuditResult) -> None:
        """Scalars of :func:`audit_scalars` and per-attack score histograms at ``result.step``;
        the per-position leakage profile (image and table) when the audit computed one."""
        scalars, _ = audit_scalars(result)
        for tag, value in scalars.items():
            self.writer.add_scalar(f"mia/{tag}", value, result.step)
        for name, scores in result.scores.items():
            valid = np.isfinite(scores)
            for group, mask in (("member", self.is_member), ("nonmember", ~self.is_member)):
                values = scores[valid & mask]
                if values.size:
                    self.writer.add_histogram(f"mia/{name}/scores_{group}", values, result.step)
        profile = result.extras.get("profile")
        if isinstance(profile, dict) and "positions" in profile:  # not {"skipped": reason}
            self._write_profile(profile, result.step)
        self.writer.flush()

    def _write_profile(self, profile: dict, step: int) -> None:
        """The per-position leakage profile as an image and a Markdown table (``mia/profile``)."""
        import io

        from matplotlib.image import imread

        from ..analyses.profile import profile_markdown, profile_png

        image = imread(io.BytesIO(profile_png(profile)), format="png")[..., :3]
        self.writer.add_image("mia/profile", image, step, dataformats="HWC")
        self.writer.add_text("mia/profile", profile_markdown(profile), step)

    def write_decision(self, decision: Any, step: int) -> None:
        """The gate verdict and its reasons as text (``mia/gate``)."""
        self.writer.add_text("mia/gate", decision_markdown(decision), step)
        self.writer.flush()

    def write_roc(self, history: AuditHistory) -> None:
        """The log-log ROC of the history's final audit as an image (``mia/roc``, the report's ``roc.png``)."""
        import io

        from matplotlib.image import imread

        from ..report.plots import roc_png

        if history.last is None or not history.last.scores:
            return
        image = imread(io.BytesIO(roc_png(history)), format="png")[..., :3]
        self.writer.add_image("mia/roc", image, history.last.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class JsonlSink:
    """One JSON line per audit in ``path``: step, time, best attack, scalars, left-out figures, verdict.

    Lines are appended (one ``write`` each, flushed); :meth:`rewrite` replaces the file
    atomically with the lines of a history (used when training resumes from a checkpoint,
    so later audits of the abandoned run disappear).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @staticmethod
    def line(result: AuditResult, verdict: str | None = None) -> str:
        scalars, unresolved = audit_scalars(result)
        record = {
            "step": result.step,
            "timestamp": result.timestamp,
            "best_attack": result.best_attack(),
            "scalars": scalars,
            "unresolved": unresolved,
            "skipped": result.skipped,
            "gate": verdict,
        }
        return json.dumps(record, sort_keys=True, allow_nan=False)

    def write(self, result: AuditResult, verdict: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(self.line(result, verdict) + "\n")
            handle.flush()

    def rewrite(self, history: AuditHistory, verdicts: Mapping[int, str] | None = None) -> None:
        verdicts = verdicts or {}
        lines = [self.line(r, verdicts.get(r.step)) + "\n" for r in history]
        atomic_write_text(self.path, "".join(lines))
