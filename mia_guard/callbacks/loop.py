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
from typing import Any, Mapping

from ..audit.auditor import Auditor
from ..audit.config import AuditConfig, config_from_call
from ..audit.result import AuditHistory, AuditResult
from ..canaries.canary_set import CanarySet
from ..scoring import distributed
from .cadence import AuditCadence
from .options import load_policy, resolve_audit_inputs
from .session import AuditSession


class AuditLoop:
    """Audits canary memorization every ``every_n_steps`` steps of a custom training loop.

    Args:
        canaries: the CanarySet whose members are in the training data, or the path of
            a canary file. Not needed when ``auditor`` is given.
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
        is_main: bool | None = None,
        auditor: Auditor | None = None,
        **options: Any,
    ) -> None:
        canaries = resolve_audit_inputs(
            "AuditLoop", canaries, auditor, every_n_steps, stop_on_blocked, policy,
            configured=config is not None or bool(options),
        )
        if is_main is None:
            group = distributed.current_group()
            is_main = group is None or group.is_root
        if auditor is None:
            config = config_from_call(AuditLoop, config, options)
            auditor = Auditor(canaries, tokenizer, config=config, progress=progress and is_main)
        self.policy = load_policy(policy)
        if self.policy is not None:
            self.policy.check_compatible(fprs=auditor.fprs, confidence=auditor.confidence)
        self.every_n_steps = every_n_steps
        self.audit_at_start = audit_at_start
        self.audit_at_end = audit_at_end
        self.stop_on_blocked = stop_on_blocked
        cadence = AuditCadence(every_n_steps, overhead_budget)
        self.session = AuditSession(
            auditor, output_dir, tensorboard_dir=logging_dir, jsonl=jsonl, policy=self.policy, is_main=is_main,
            cadence=cadence,
        )
        self.stopped_early = False
        self.started = False
        self.report_paths: dict[str, Path] = {}

    # ------------------------------------------------------------------ views
    @property
    def auditor(self) -> Auditor:
        return self.session.auditor

    @property
    def history(self) -> AuditHistory:
        """The leakage curve so far."""
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
        if self.audit_at_start and (step == 0 or not len(self.history)):
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

    def audit(self, model: Any, step: int) -> AuditResult | None:
        """Audit now (unless ``step`` was just audited); the latest result, or ``None``
        when the audit was skipped (scoring out of memory even one canary at a time)."""
        if self.session.audited(step):
            return self.history.last
        result, decision = self.session.audit(model, step)
        if decision is not None and decision.verdict == "blocked" and self.stop_on_blocked:
            self.stopped_early = True
        return result

    def finish(self, model: Any, step: int, run_info: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """End of training: the final audit (``audit_at_end``), then on the main process
        the report files (``report.json``, ``report.md``, ``leakage.png``, ``roc.png``);
        returns their paths (empty on other processes)."""
        if self.audit_at_end:
            self.audit(model, step)
        info = {"global_step": int(step), "every_n_steps": self.every_n_steps, "stopped_early": self.stopped_early}
        info["model"] = type(model).__name__
        self.report_paths = self.session.finish({**info, **dict(run_info or {})})
        return self.report_paths
