"""TensorBoard sink: audit figures as ``mia/...`` event-file tags (see docs/tensorboard.md).

Created lazily and only on the process that writes (rank 0), so other ranks never open a
file. TensorBoard (``torch.utils.tensorboard``) is imported on first write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...audit.result import AuditHistory, AuditResult
from .base import Sink
from ...stats.metrics import min_resolvable_fpr
from .scalars import audit_scalars, fpr_label, set_prefix

#: File name suffix of mia_guard's TensorBoard event files (the Trainer's own sit beside them).
EVENT_FILE_SUFFIX = ".mia_guard"


def custom_scalar_layout(
    attacks: Sequence[str], fprs: Sequence[float], n_nonmembers: int | None = None, canary_set: str | None = None
) -> dict:
    """TensorBoard custom-scalars layout: per attack, AUC with its CI band and the TPR curves.

    Only charts that can get data are laid out: with ``n_nonmembers`` given, TPR charts
    for FPRs those non-members cannot resolve (below ``1 / n_nonmembers``; those figures
    are never written) are left out. Custom-scalars charts have no legend, so a chart with
    several lines says in its title which line is which: TPR at a larger FPR is never
    lower (same scores, looser threshold), so the lines run bottom to top in FPR order.
    ``Margin`` charts take exact tags (value, lower, upper); ``Multiline`` charts take
    regular expressions, so tags are escaped. A named ``canary_set`` gets its own
    category (``mia_guard leakage: <set>``) over its ``mia/<set>/...`` tags.
    """
    mia = f"mia/{set_prefix(canary_set)}"
    if n_nonmembers is not None:
        fprs = [f for f in fprs if n_nonmembers >= 1 and f >= min_resolvable_fpr(n_nonmembers) * (1 - 1e-9)]
    charts: dict[str, list] = {}
    for name in attacks:
        charts[f"{name}: AUC with CI"] = ["Margin", [f"{mia}{name}/auc", f"{mia}{name}/auc_low", f"{mia}{name}/auc_high"]]
        if len(fprs) > 1:
            tpr_tags = [re.escape(f"{mia}{name}/tpr@{fpr_label(f)}fpr") + "$" for f in sorted(fprs)]
            levels = ", ".join(fpr_label(f) for f in sorted(fprs))
            charts[f"{name}: TPR at {levels} FPR (lines bottom to top)"] = ["Multiline", tpr_tags]
        for f in fprs:
            tag = f"{mia}{name}/tpr@{fpr_label(f)}fpr"
            charts[f"{name}: TPR@{fpr_label(f)}FPR with CI"] = ["Margin", [tag, f"{tag}_low", f"{tag}_high"]]
    charts["best attack: AUC with CI"] = ["Margin", [f"{mia}best/auc", f"{mia}best/auc_low", f"{mia}best/auc_high"]]
    charts["canary loss (NLL), members with CI"] = ["Margin", [f"{mia}loss/member", f"{mia}loss/member_low", f"{mia}loss/member_high"]]
    charts["canary loss (NLL), non-members with CI"] = ["Margin", [f"{mia}loss/nonmember", f"{mia}loss/nonmember_low",
                                                        f"{mia}loss/nonmember_high"]]
    return {"mia_guard leakage" + (f": {canary_set}" if canary_set else ""): charts}


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

    Re-runs and resumes (:meth:`start`): when a run resumes from a checkpoint at step
    ``s``, or a new run starts in a directory that already holds mia_guard events, the
    writer is opened with ``purge_step`` (``s + 1``, or 0), so TensorBoard drops the
    points an abandoned or earlier run left at those steps instead of mixing them with
    the new ones. (TensorBoard's data server, the default reader, also replaces a tag's
    points from a step that is written again; the purge is what the Python reader and
    tags no longer written need.)

    Args:
        log_dir: the TensorBoard logging directory.
        attacks: attack names for the custom-scalars layout (written once, with the first audit).
        fprs: FPR levels for the layout.
        is_member: canary membership ``[N]`` (True = inserted), for the score histograms
            and to leave unresolvable FPRs out of the layout; in a run with several named
            canary sets, a dict ``{set name: membership}`` (each audit's
            ``result.canary_set`` picks its set; tags ``mia/<set>/...``).
    """

    def __init__(
        self, log_dir: str | os.PathLike, attacks: Sequence[str], fprs: Sequence[float],
        is_member: np.ndarray | Mapping[str, np.ndarray],
    ) -> None:
        self.log_dir = Path(log_dir)
        self.attacks = list(attacks)
        self.fprs = list(fprs)
        sets = is_member if isinstance(is_member, Mapping) else {None: is_member}
        self.is_member = {name: np.asarray(m, dtype=bool) for name, m in sets.items()}
        self._writer: Any = None
        #: ``purge_step`` of the next writer (set by :meth:`start`), ``None`` for none
        self.purge_step: int | None = None

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

            self._writer = SummaryWriter(
                log_dir=str(self.log_dir), filename_suffix=EVENT_FILE_SUFFIX, purge_step=self.purge_step
            )
            layout: dict = {}
            for name, is_member in self.is_member.items():
                layout.update(custom_scalar_layout(self.attacks, self.fprs, int((~is_member).sum()), name))
            self._writer.add_custom_scalars(layout)
        return self._writer

    def start(self, history: AuditHistory, decisions: Any, step: int = 0) -> None:
        """A run starts at ``step`` (0, or the checkpoint's step on resume): decide the purge
        step of the writer (see the class docstring); an open writer of an earlier run is closed."""
        earlier = self._writer is not None or any(self.log_dir.glob(f"events.out.tfevents.*{EVENT_FILE_SUFFIX}"))
        self.close()
        self.purge_step = step + 1 if step > 0 else (0 if earlier else None)

    def write(self, result: AuditResult, decision: Any = None) -> None:
        """Scalars of :func:`audit_scalars` and per-attack score histograms at ``result.step``;
        the per-position leakage profile (image and table) when the audit computed one; the
        gate verdict and its reasons as text (``mia/gate``) when there is a decision."""
        scalars, _ = audit_scalars(result)
        for tag, value in scalars.items():
            self.writer.add_scalar(f"mia/{tag}", value, result.step)
        mia = f"mia/{set_prefix(result.canary_set)}"
        is_member = self.is_member[result.canary_set]
        for name, scores in result.scores.items():
            valid = np.isfinite(scores)
            for group, mask in (("member", is_member), ("nonmember", ~is_member)):
                values = scores[valid & mask]
                if values.size:
                    self.writer.add_histogram(f"{mia}{name}/scores_{group}", values, result.step)
        profile = result.extras.get("profile")
        if isinstance(profile, dict) and "positions" in profile:  # not {"skipped": reason}
            self._write_profile(profile, result.step, mia)
        if decision is not None:
            self.writer.add_text(f"{mia}gate", decision_markdown(decision), result.step)
        self.writer.flush()

    def update(self, result: AuditResult, decision: Any, new: Any) -> None:
        """Only the new scalars (and the gate text) at the audit's step: no point twice."""
        for tag, value in new.items():
            self.writer.add_scalar(f"mia/{tag}", value, result.step)
        if decision is not None:
            self.writer.add_text(f"mia/{set_prefix(result.canary_set)}gate", decision_markdown(decision), result.step)
        self.writer.flush()

    def _write_profile(self, profile: dict, step: int, mia: str) -> None:
        """The per-position leakage profile as an image and a Markdown table (``mia/profile``)."""
        import io

        from matplotlib.image import imread

        from ...analyses.profile import profile_markdown, profile_png

        image = imread(io.BytesIO(profile_png(profile)), format="png")[..., :3]
        self.writer.add_image(f"{mia}profile", image, step, dataformats="HWC")
        self.writer.add_text(f"{mia}profile", profile_markdown(profile), step)

    def finish(self, history: AuditHistory) -> None:
        """The log-log ROC of the history's final audit as an image (``mia/roc``, the report's ``roc.png``)."""
        import io

        from matplotlib.image import imread

        from ...report.plots import roc_png

        if history.last is None or not history.last.scores:
            return
        image = imread(io.BytesIO(roc_png(history)), format="png")[..., :3]
        tag = f"mia/{set_prefix(history.last.canary_set)}roc"
        self.writer.add_image(tag, image, history.last.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
