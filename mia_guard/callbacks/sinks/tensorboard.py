"""TensorBoard sink: audit figures as ``mia/...`` event-file tags (see docs/tensorboard.md).

Created lazily and only on the process that writes (rank 0), so other ranks never open a
file. TensorBoard (``torch.utils.tensorboard``) is imported on first write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...audit.result import AuditHistory, AuditResult
from .base import Sink
from .scalars import audit_scalars, fpr_label

#: File name suffix of mia_guard's TensorBoard event files (the Trainer's own sit beside them).
EVENT_FILE_SUFFIX = ".mia_guard"


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


class TensorBoardSink(Sink):
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

    def write(self, result: AuditResult, decision: Any = None) -> None:
        """Scalars of :func:`audit_scalars` and per-attack score histograms at ``result.step``;
        the per-position leakage profile (image and table) when the audit computed one; the
        gate verdict and its reasons as text (``mia/gate``) when there is a decision."""
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
        if decision is not None:
            self.writer.add_text("mia/gate", decision_markdown(decision), result.step)
        self.writer.flush()

    def _write_profile(self, profile: dict, step: int) -> None:
        """The per-position leakage profile as an image and a Markdown table (``mia/profile``)."""
        import io

        from matplotlib.image import imread

        from ...analyses.profile import profile_markdown, profile_png

        image = imread(io.BytesIO(profile_png(profile)), format="png")[..., :3]
        self.writer.add_image("mia/profile", image, step, dataformats="HWC")
        self.writer.add_text("mia/profile", profile_markdown(profile), step)

    def finish(self, history: AuditHistory) -> None:
        """The log-log ROC of the history's final audit as an image (``mia/roc``, the report's ``roc.png``)."""
        import io

        from matplotlib.image import imread

        from ...report.plots import roc_png

        if history.last is None or not history.last.scores:
            return
        image = imread(io.BytesIO(roc_png(history)), format="png")[..., :3]
        self.writer.add_image("mia/roc", image, history.last.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
