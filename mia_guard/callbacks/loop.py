"""AuditLoop: membership-inference audits from a hand-written training loop.

For plain PyTorch and Accelerate loops (the Hugging Face ``Trainer`` has
:class:`~mia_guard.callbacks.MIAAuditCallback`). The loop calls three methods; the
AuditLoop decides when to audit and writes the same files and TensorBoard figures as
the callback::

    audits = AuditLoop(canaries, tokenizer, every_n_steps=200, output_dir="run/mia",
                       logging_dir="run/tensorboard")
    audits.start(model)                      # audits the untrained model (the reference)
    for step in range(1, max_steps + 1):     # step = optimizer steps done
        ...forward, backward, optimizer.step()...
        if audits.step(model, step):         # True when the release gate blocks
            break                            # (with stop_on_blocked=True)
    audits.finish(model, step)               # final audit and report files

Resuming from a checkpoint at step ``s``: ``audits.start(model, step=s)`` continues the
curve in ``output_dir/history.json`` (audits after ``s`` are dropped) instead of
auditing a reference model.

Trackers: ``accelerator=`` sends the figures to every tracker of
``accelerator.init_trackers`` (TensorBoard, W&B, MLflow, ...; :class:`~.sinks.trackers.AccelerateTrackerSink`)
under the same ``mia/...`` names, at the loop's step. When the accelerator has a
TensorBoard tracker and no ``logging_dir`` is given, mia_guard's own TensorBoard sink
writes into that tracker's directory (histograms, the ROC image and the chart layout
beside the loop's own scalars) and the scalars are not sent twice. ``sinks=[...]`` adds
any other :class:`~.sinks.base.Sink`.

Distributed (DDP, FSDP; ``torchrun`` or ``accelerate launch``): build the AuditLoop on
every process after the process group is initialized (e.g. after ``Accelerator()``)
and call every method on every process with the same step: each process scores a
shard of the canaries, rank 0 evaluates and writes the files, and :meth:`step` returns
the same answer everywhere, so all processes stop together. Pass the model as the loop
trains it (the DDP/FSDP wrapper is fine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..audit.auditor import Auditor
from ..audit.config import AuditConfig, config_from_call
from ..audit.result import AuditHistory, AuditResult
from ..canaries.canary_set import CanarySet
from ..scoring import distributed
from .cadence import AuditCadence
from .canary_sets import SessionGroup
from .extraction_schedule import ExtractionSchedule
from .options import load_policy, resolve_audit_inputs
from .session import AuditSession
from .sinks.base import Sink
from .sinks.trackers import AccelerateTrackerSink


class AuditLoop:
    """Audits canary memorization every ``every_n_steps`` steps of a custom training loop.

    Args:
        canaries: the CanarySet whose members are in the training data, or the path of
            a canary file; or named sets ``{"credentials": set_a, "texts": set_b}``, each
            audited on its own (figures ``mia/<set>/...``, files in ``output_dir/<set>``),
            with one report and one gate decision covering all (see
            :mod:`mia_guard.callbacks.canary_sets`). Not needed when ``auditor`` is given.
        tokenizer: the training tokenizer (not needed for token-only canaries).
        config: the audit's :class:`~mia_guard.audit.config.AuditConfig` (attacks, FPR
            levels, confidence, folds, seed, analyses, batch size...), or its dict.
        every_n_steps: :meth:`step` audits when ``step`` is a multiple of this; ``None``
            for no periodic audits. With ``overhead_budget``: the shortest spacing between
            audits (``None`` lets the budget alone decide).
        overhead_budget: audit as often as keeps audit time within this fraction of the
            measured training time (time between :meth:`step` calls, audits excluded), the
            first and final audits included (:mod:`mia_guard.callbacks.cadence`); ``None``
            for the fixed ``every_n_steps``.
        output_dir: directory for ``history.json``, ``canaries.json``, ``audits.jsonl``
            and the report files. Required.
        logging_dir: TensorBoard logging directory (``mia/...`` tags), or ``None`` for no
            TensorBoard.
        audit_at_start: :meth:`start` audits the model before its first update (the
            reference for calibrated attacks; leave it on for them).
        audit_at_end: :meth:`finish` audits the final model (unless that step was just audited).
        policy: a ``mia_guard.gate.ReleasePolicy``, its dict, or the path of its TOML
            file; checked after every audit.
        stop_on_blocked: :meth:`step` returns ``True`` once the verdict is ``blocked``.
        progress: progress bar while scoring (main process only).
        jsonl: write ``audits.jsonl``.
        extraction: when greedy secret extraction runs: ``"final"`` (default) at
            :meth:`finish`, an int N every N steps too, ``None`` never (see
            :mod:`mia_guard.callbacks.extraction_schedule`).
        extraction_options: ``hint_tokens``, ``max_new_tokens``, ``batch_size`` of the extraction.
        accelerator: an ``accelerate.Accelerator`` whose trackers get the figures (see
            the module docstring); its main process decides ``is_main`` when not given.
        sinks: further :class:`~mia_guard.callbacks.sinks.Sink` objects (main process only).
        is_main: whether this process writes files; default: rank 0 of an initialized
            ``torch.distributed`` group, else ``True``.
        auditor: a configured Auditor to use instead of building one (then neither
            ``config`` nor audit options may be given).
        **options: fields of :class:`~mia_guard.audit.config.AuditConfig` replacing those
            of ``config``, e.g. ``AuditLoop(canaries, tok, output_dir=..., attacks=["loss"])``.

    Raises:
        OutputDirectoryError: ``output_dir`` or ``logging_dir`` cannot be written
            (checked here, before training starts).
    """

    def __init__(
        self,
        canaries: CanarySet | str | os.PathLike | None = None,
        tokenizer: Any = None,
        *,
        config: AuditConfig | Mapping[str, Any] | None = None,
        every_n_steps: int | None = 200,
        overhead_budget: float | None = None,
        output_dir: str | os.PathLike,
        logging_dir: str | os.PathLike | None = None,
        audit_at_start: bool = True,
        audit_at_end: bool = True,
        policy: Any = None,
        stop_on_blocked: bool = False,
        progress: bool = False,
        jsonl: bool = True,
        extraction: Any = "final",
        extraction_options: Mapping[str, Any] | None = None,
        accelerator: Any = None,
        sinks: Sequence[Sink] = (),
        is_main: bool | None = None,
        auditor: Auditor | None = None,
        **options: Any,
    ) -> None:
        canaries = resolve_audit_inputs(
            "AuditLoop", canaries, auditor, every_n_steps, stop_on_blocked, policy,
            configured=config is not None or bool(options),
        )
        if is_main is None and accelerator is not None:
            is_main = bool(accelerator.is_main_process)
        if is_main is None:
            group = distributed.current_group()
            is_main = group is None or group.is_root
        sinks = list(sinks)
        if accelerator is not None and is_main:
            logging_dir, tracker_sink = _accelerate_trackers(accelerator, logging_dir)
            sinks.insert(0, tracker_sink)
        if auditor is None:
            config = config_from_call(AuditLoop, config, options)
            sets = canaries if isinstance(canaries, Mapping) else {None: canaries}
            built = {name: Auditor(c, tokenizer, config=config, progress=progress and is_main) for name, c in sets.items()}
            auditor = built.get(None, built)
        first = auditor if isinstance(auditor, Auditor) else next(iter(auditor.values()))
        self.policy = load_policy(policy)
        if self.policy is not None:
            self.policy.check_compatible(fprs=first.fprs, confidence=first.confidence)
        self.every_n_steps = every_n_steps
        self.audit_at_start = audit_at_start
        self.audit_at_end = audit_at_end
        self.stop_on_blocked = stop_on_blocked
        session_class = AuditSession if isinstance(auditor, Auditor) else SessionGroup
        self.session = session_class(
            auditor, output_dir, tensorboard_dir=logging_dir, jsonl=jsonl, sinks=sinks, policy=self.policy,
            extraction=ExtractionSchedule.from_option(extraction, extraction_options), is_main=is_main,
            cadence=AuditCadence(every_n_steps, overhead_budget),
        )
        self.stopped_early = False
        self.started = False
        self.report_paths: dict[str, Path] = {}

    # ------------------------------------------------------------------ views
    @property
    def auditor(self) -> Auditor:
        """The Auditor (a run with named canary sets has one per set: :attr:`auditors`)."""
        if isinstance(self.session, SessionGroup):
            raise AttributeError("this AuditLoop audits named canary sets: use .auditors[name]")
        return self.session.auditor

    @property
    def auditors(self) -> dict[str | None, Auditor]:
        """``{set name: Auditor}`` (``{None: auditor}`` for a single unnamed set)."""
        if isinstance(self.session, SessionGroup):
            return {name: s.auditor for name, s in self.session.sessions.items()}
        return {None: self.session.auditor}

    @property
    def history(self) -> AuditHistory | dict[str, AuditHistory]:
        """The leakage curve so far; with named canary sets, ``{set name: AuditHistory}``."""
        if isinstance(self.session, SessionGroup):
            return self.session.histories
        return self.session.history

    @property
    def last_decision(self) -> Any:
        """The release-gate decision of the latest audit (``None`` without a policy)."""
        return self.session.last_decision

    # ------------------------------------------------------------------ loop events
    def start(self, model: Any, step: int = 0) -> bool:
        """Begin the run at ``step``: at 0 a fresh curve (and the reference audit when
        ``audit_at_start``); later, resume the curve of ``history.json`` at ``step``
        (no audit, unless there is no saved curve: then this audit is the reference).

        Returns whether training should stop (the reference audit was blocked).
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step == 0:
            self.session.start_fresh()
        else:
            self.session.resume(step)
        self.started = True
        # a resumed run keeps its reference; it audits here only when no curve survived
        curve = all(len(a.history) for a in self.auditors.values())
        if self.audit_at_start and (step == 0 or not curve):
            self.audit(model, step)
        self.session.cadence.start_training(step)
        return self.stopped_early

    def step(self, model: Any, step: int) -> bool:
        """Call after each optimizer step with the number of steps done; audits when
        ``step`` is a multiple of ``every_n_steps`` (or when the overhead budget allows).
        Returns whether training should stop
        (a ``blocked`` verdict with ``stop_on_blocked``; the same on every process)."""
        if not self.started:
            raise RuntimeError(
                "call AuditLoop.start(model) before the first training step (it audits the untrained model as "
                "the reference), or start(model, step=s) when resuming from a checkpoint at step s"
            )
        if self.session.cadence.due(step, self.session.group):
            self.audit(model, step)
        return self.stopped_early

    def audit(self, model: Any, step: int, final: bool = False) -> Any:
        """Audit now (unless ``step`` was just audited; ``final``: the run's last audit, with
        secret extraction by default); the latest result, or ``None`` when the audit was
        skipped (scoring out of memory even one canary at a time). With named canary sets,
        ``{set name: result or None}``."""
        if self.session.audited(step):
            if final:
                self.session.extract_after(model, step)
            if isinstance(self.session, SessionGroup):
                return {name: h.last for name, h in self.session.histories.items()}
            return self.history.last
        result, decision = self.session.audit(model, step, final=final)
        if decision is not None and decision.verdict == "blocked" and self.stop_on_blocked:
            self.stopped_early = True
        return result

    def finish(self, model: Any, step: int, run_info: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """End of training: the final audit (``audit_at_end``), then on the main process
        the report files (``report.json``, ``report.md``, ``leakage.png``, ``roc.png``;
        with named canary sets each set's in ``output_dir/<set>`` and the report set in
        ``output_dir``); returns their paths (empty on other processes)."""
        if self.audit_at_end:
            self.audit(model, step, final=True)
        info = {"global_step": int(step), "every_n_steps": self.every_n_steps, "stopped_early": self.stopped_early}
        info["model"] = type(model).__name__
        self.report_paths = self.session.finish({**info, **dict(run_info or {})})
        return self.report_paths


def _accelerate_trackers(accelerator: Any, logging_dir: str | os.PathLike | None) -> tuple[Any, AccelerateTrackerSink]:
    """The TensorBoard directory and the tracker sink for ``accelerator``'s trackers: with a
    TensorBoard tracker and no ``logging_dir``, mia_guard's TensorBoard sink writes into
    the tracker's directory and the tracker sink leaves TensorBoard out."""
    if not hasattr(accelerator, "trackers"):
        raise TypeError(f"accelerator must be an accelerate.Accelerator, got {type(accelerator).__name__}")
    tensorboard = next((t for t in accelerator.trackers if t.name == "tensorboard"), None)
    if logging_dir is None and tensorboard is not None and getattr(tensorboard, "logging_dir", None):
        return Path(tensorboard.logging_dir), AccelerateTrackerSink(accelerator, exclude=["tensorboard"])
    return logging_dir, AccelerateTrackerSink(accelerator)
