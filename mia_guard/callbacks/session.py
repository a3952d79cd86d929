"""AuditSession: audits a model during training and sends each result where it belongs.

Framework-neutral (no transformers import): the Hugging Face callback and plain or
Accelerate loops only translate their events into :meth:`AuditSession.audit` and
:meth:`AuditSession.finish`. One audit =

1. unwrap the training wrapper (DDP / DataParallel, Opacus ``GradSampleModule``, PEFT
   ``PeftModel``, ``torch.compile``) and disable Opacus hooks;
2. score the canaries and evaluate the attacks with every RNG (Python, NumPy, torch
   CPU and CUDA) saved and restored, so training continues exactly as without the audit
   (the scoring itself sets eval mode, disables gradients and restores module modes);
3. run the release gate; on the writing process only: append the audit to the history
   store (``history.json`` and its record folder, :mod:`mia_guard.audit.storage`), then
   hand the result and the decision to every sink
   (:class:`~mia_guard.callbacks.sinks.base.Sink`: TensorBoard, JSONL, trackers).

In a distributed run (``torch.distributed`` initialized with more than one process
when the session is built) every process scores its shard of the canaries, rank 0
gathers the statistics and evaluates, and the result and gate decision are broadcast so
every process records the same figures and takes the same decision
(:mod:`mia_guard.scoring.distributed`). Only the process with ``is_main=True`` (rank 0) opens
files. Faults: scoring that runs out of memory is retried at half the batch size
(:mod:`mia_guard.scoring.faults`); any audit that still fails is skipped, logged and
recorded, and training goes on (:mod:`mia_guard.callbacks.failures`); unwritable output
directories are reported when the session is built; an audit the store cannot take (a
full disk) stays in the curve with a note and is written with the next audit that can be.

One writer per output directory: the main process holds an
:class:`~mia_guard.audit.lock.OutputDirectoryLock` from construction to :meth:`close`, so a
second run pointed at the same directory fails at once, naming the first.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..audit.auditor import Auditor
from ..audit.lock import OutputDirectoryLock, OutputDirectoryLocked
from ..audit.result import AuditHistory, AuditResult
from ..audit.storage import HistoryWriter, reopen_store
from ..scoring import distributed
from ..scoring.faults import OutputDirectoryError, check_writable, is_out_of_memory, retry_on_oom
from ..scoring.guards import opacus_hooks_disabled, preserved_rng, unwrap_model
from ..scoring.token_stats import TokenStats
from .cadence import AuditCadence
from .extraction_schedule import ExtractionSchedule, extract_after, extract_into
from .failures import ScoringFailed, failure_reason, guarded
from .shared_state import saved_history, share_outcome
from .sinks.base import Sink
from .sinks.jsonl import JsonlSink
from .sinks.tensorboard import TensorBoardSink

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
CANARY_FILE = "canaries.json"
JSONL_FILE = "audits.jsonl"


# ---------------------------------------------------------------------------- session
class AuditSession:
    """Audits one training run: results, history file, sinks and release gate.

    Args:
        auditor: the configured Auditor (its ``history`` is the run's leakage curve).
        output_dir: where ``history.json``, ``canaries.json``, ``audits.jsonl`` and the
            report go.
        tensorboard_dir: TensorBoard logging directory, or ``None`` for no TensorBoard.
        jsonl: write ``audits.jsonl``.
        sinks: further :class:`~mia_guard.callbacks.sinks.base.Sink` objects (e.g. experiment
            trackers), called after the TensorBoard and JSONL sinks; main process only.
        policy: a ``mia_guard.gate.ReleasePolicy`` checked after every audit, or ``None``.
        extraction: when secret extraction runs with an audit
            (:class:`~mia_guard.callbacks.extraction_schedule.ExtractionSchedule`), or ``None``.
        is_main: whether this process writes files (rank 0; in a distributed run it must
            be exactly rank 0).
        cadence: the :class:`~mia_guard.callbacks.cadence.AuditCadence` the caller asks when
            to audit; the session tells it what each audit cost and records that in the
            result (``extras["cost"]``) and the report. Default: no periodic audits.
        canary_set: the set's name in a run with several named canary sets
            (:class:`~mia_guard.callbacks.canary_sets.SessionGroup`); stamped on every result.

    Raises:
        OutputDirectoryError: ``output_dir`` or ``tensorboard_dir`` cannot be written
            (checked with a probe file; on every process of a distributed run).
        OutputDirectoryLocked: another live run writes into ``output_dir`` (on the main
            process; the others get an OutputDirectoryError saying so).

    In a distributed run, build the session on every process (it is a collective) after
    the process group is initialized.
    """

    def __init__(
        self,
        auditor: Auditor,
        output_dir: str | os.PathLike,
        *,
        tensorboard_dir: str | os.PathLike | None = None,
        jsonl: bool = True,
        sinks: Sequence[Sink] = (),
        policy: Any = None,
        extraction: ExtractionSchedule | None = None,
        is_main: bool = True,
        cadence: AuditCadence | None = None,
        canary_set: str | None = None,
    ) -> None:
        self.auditor = auditor
        self.cadence = cadence if cadence is not None else AuditCadence(None, None)
        self.extraction = extraction
        self.canary_set = canary_set
        self.output_dir = Path(output_dir)
        self.policy = policy
        self.is_main = is_main
        self.group = distributed.current_group()
        if self.group is not None and is_main != self.group.is_root:
            raise ValueError(
                f"in a distributed run rank 0 writes the audit files; this is rank {self.group.rank} with "
                f"is_main={is_main}. Pass is_main=(rank == 0)"
            )
        self.lock = OutputDirectoryLock(self.output_dir)
        self._check_directories(tensorboard_dir)
        #: appends each audit to ``history.json``'s store (main process; set by start_fresh / resume)
        self.writer: HistoryWriter | None = None
        self.decisions: dict[int, Any] = {}
        #: steps whose audit was skipped, with the reason (scoring out of memory at batch size 1)
        self.skipped: dict[int, str] = {}
        #: scoring batch size; halved for good after an out-of-memory error
        self.batch_size: int | None = auditor.scoring_options["batch_size"]  # None: chosen at the first audit
        #: wall seconds spent in this process: ``audits`` (all audits, publishing included), ``report``
        self.seconds = {"audits": 0.0, "report": 0.0}
        canaries = auditor.canaries
        bad = [type(sink).__name__ for sink in sinks if not isinstance(sink, Sink)]
        if bad:
            raise TypeError(f"sinks must implement mia_guard.callbacks.sinks.Sink, got {bad}")
        #: where results go, in order (main process only; empty elsewhere)
        self.sinks: list[Sink] = []
        if is_main:
            if tensorboard_dir is not None:
                attacks = [a.name for a in auditor.attacks]
                self.sinks.append(TensorBoardSink(tensorboard_dir, attacks, auditor.fprs, canaries.is_member))
            if jsonl:
                self.sinks.append(JsonlSink(self.output_dir / JSONL_FILE))
            self.sinks.extend(sinks)
            canaries.save(self.output_dir / CANARY_FILE)

    @property
    def history(self) -> AuditHistory:
        return self.auditor.history

    @property
    def history_path(self) -> Path:
        return self.output_dir / HISTORY_FILE

    @property
    def canary_path(self) -> Path:
        return self.output_dir / CANARY_FILE

    @property
    def last_decision(self) -> Any:
        """The gate decision on the last audit that ran; when an audit failed after it, the
        decision fails closed (the final model was not measured)."""
        last = self.history.last
        decision = self.decisions.get(last.step) if last is not None else None
        if decision is None or not self.history.failed_since_last():
            return decision
        from ..gate import evaluate_result

        return evaluate_result(self.policy, last, failed_audits=self.history.failed_since_last())

    def audited(self, step: int) -> bool:
        """Whether the latest audit, or the latest failed one, was at ``step`` (never audit a step twice)."""
        last, failures = self.history.last, self.history.failures
        return (last is not None and last.step == step) or (bool(failures) and failures[-1]["step"] == step)

    def resume(self, step: int) -> None:
        """Continue the curve of ``history.json`` from a checkpoint at ``step``.

        Audits after ``step`` (from the abandoned part of the run) are dropped, the
        step-0 statistics become the reference again, and the JSONL file is rewritten
        to match. Does nothing when no history file exists. In a distributed run rank 0
        reads the file and the other processes receive its curve (without token
        statistics), so all agree on it even without a shared filesystem.
        """
        saved = saved_history(self.group, self.history_path)
        if saved is None:
            if self.is_main:
                self.writer = self.auditor.history.store(self.history_path)
            return
        if saved.canary_hash != self.auditor.canaries.content_hash:
            raise ValueError(
                f"{self.history_path} belongs to other canaries (hash {saved.canary_hash[:12]}...); "
                "resume with the canaries of the original run, or use another output_dir"
            )
        saved.truncate_after(step)
        if self.is_main:
            self.writer = reopen_store(self.history_path, saved, step)
        self.auditor.history = saved
        first = saved.results[0] if saved.results else None
        if self.auditor.config.reference == "first_audit" and first is not None and first.stats is not None:
            self.auditor.set_reference(first.stats)
        if self.policy is not None:
            from ..gate import evaluate_result

            self.decisions = {r.step: evaluate_result(self.policy, r) for r in saved}
        for sink in self.sinks:
            sink.start(saved, dict(self.decisions), step=step)
        logger.info("mia_guard: resumed the audit history at step %d (%d audits kept)", step, len(saved))

    def start_fresh(self) -> None:
        """A new run from step 0: empty history and JSONL file.

        When the auditor carries audits of an earlier run (the same callback trained
        again), they are dropped, and so is a reference taken from that run's first audit.
        """
        auditor = self.auditor
        previous = auditor.history
        if len(previous):
            logger.warning("mia_guard: a new training run starts at step 0; the previous audit history is discarded")
            first = previous.results[0].stats
            if first is not None and auditor.reference_stats is first:
                auditor.reference_stats = None
            auditor.history = AuditHistory(previous.canary_hash, previous.is_member, previous.fprs, previous.confidence)
        self.decisions = {}
        if self.is_main:
            self.writer = auditor.history.store(self.history_path)
        for sink in self.sinks:
            sink.start(auditor.history, {})

    def audit(self, model: Any, step: int, final: bool = False) -> tuple[AuditResult | None, Any]:
        """Audit ``model`` at ``step`` (``final``: the run's last audit, which runs secret
        extraction by default); returns ``(result, gate decision or None)``.

        In a distributed run every process calls it at the same step and gets the same
        result and decision. An audit never stops training: when it fails (scoring runs
        out of memory even one canary per batch, every canary's logits are NaN/inf, a
        bad input, any other error), it is skipped, logged, recorded in the history
        (``AuditHistory.failures``, the report's ``failed_audits``; the release gate fails
        closed on a failed final audit) and ``(None, None)`` is returned.
        """
        started = time.perf_counter()
        result = decision = failure = None
        with preserved_rng(), opacus_hooks_disabled(model):
            try:
                stats, failed_sizes = self._score(distributed.for_scoring(unwrap_model(model)))
            except Exception as err:  # noqa: BLE001 - an audit must never kill training
                stats, failure = None, failure_reason("scoring the canaries", err)
            if stats is not None:  # rank 0 of a distributed run, or the only process
                try:
                    result = self.auditor.evaluate(stats, step, scoring_seconds=time.perf_counter() - started)
                except Exception as err:  # noqa: BLE001
                    failure = failure_reason("evaluating the attacks", err)
                if result is not None:
                    result.canary_set = self.canary_set
                    if failed_sizes:
                        result.notes.append(
                            f"scoring ran out of memory at batch size {', '.join(map(str, failed_sizes))}; "
                            f"it was redone at batch size {self.batch_size} (kept for later audits)"
                        )
                    if self.extraction is not None and self.extraction.due(step, final):
                        extract_into(self.extraction, unwrap_model(model), result, self.auditor)
                    decision = self.decide(result)
                    result.extras["cost"] = self.cadence.figures(time.perf_counter() - started)
        if self.group is not None:
            if failure is not None and not self.group.is_root:  # rank 0 records the audit; say why here
                logger.error("mia_guard: rank %d: %s", self.group.rank, failure)
            result, decision, failure = share_outcome(
                self.group, self.auditor.history, self.decisions, result, decision, failure
            )
        if failure is not None:
            self._record_failure(step, failure)
        elif self.is_main:
            self.publish(result, decision)
        self._account(step, started)
        return result, decision

    def extract_after(self, model: Any, step: int) -> None:
        """Add the final extraction to an audit at ``step`` made before (:func:`.extraction_schedule.extract_after`)."""
        started = time.perf_counter()
        extract_after(self, model, step)
        self.seconds["audits"] += time.perf_counter() - started

    def finish(self, run_info: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Final outputs (main process): each sink's final figures (e.g. the ROC image), the
        report files; closes the sinks."""
        started = time.perf_counter()
        last = self.history.last
        paths: dict[str, Path] = {}
        if self.is_main and last is not None:
            for sink in self.sinks:
                sink.finish(self.history)
            from ..report.files import write_report

            try:
                paths = write_report(
                    self.history,
                    self.output_dir,
                    canaries=self.auditor.canaries,
                    decision=self.last_decision,
                    run_info={
                        **dict(run_info or {}),
                        **self.cadence.summary(),
                        **({"skipped_audits": {str(k): v for k, v in self.skipped.items()}} if self.skipped else {}),
                    },
                )
            except Exception as err:  # noqa: BLE001 - training is over; its model must still be saved
                logger.error("mia_guard: the audit report could not be written to %s (%s); write it later with "
                             "`mia-guard report %s`", self.output_dir, err, self.output_dir)
        elif self.is_main and self.history.failures:
            logger.error("mia_guard: no audit of this run succeeded, so there is no report (see history.json)")
        self.close()
        self.seconds["report"] += time.perf_counter() - started
        return paths

    def close(self) -> None:
        """Close every sink and release the output directory."""
        for sink in self.sinks:
            sink.close()
        self.lock.release()

    # ------------------------------------------------------------------ internals
    def _check_directories(self, tensorboard_dir: str | os.PathLike | None) -> None:
        """Probe-write the output directories and lock ``output_dir`` on the main process; every
        process raises on failure."""
        directories = [("audit output directory", self.output_dir)]
        if tensorboard_dir is not None:
            directories.append(("TensorBoard logging directory", Path(tensorboard_dir)))
        error: OutputDirectoryError | OutputDirectoryLocked | None = None
        if self.is_main:
            try:
                check_writable(directories)
                self.lock.acquire()
            except (OutputDirectoryError, OutputDirectoryLocked) as err:
                error = err
        message = str(error) if error is not None else None
        if self.group is not None:
            message = self.group.broadcast_json(message)
        if error is not None:
            raise error
        if message is not None:
            raise OutputDirectoryError(f"on rank 0: {message}")

    def _score(self, model: Any) -> tuple[TokenStats | None, list[int]]:
        """The canaries' statistics (``None`` on ranks other than 0) and the batch sizes that ran out of memory.

        Raises the scoring error on every process when scoring failed on any of them (so
        no process waits in a collective for one that gave up).
        """
        options = self.auditor.scoring_options
        encoded = self.auditor.encoded

        def run(batch_size: int) -> Any:
            try:
                return distributed.score_shard(
                    model, encoded, batch_size, self.group,
                    chunk_size=options["chunk_size"], device=options["device"], progress=options["progress"],
                )
            except Exception as err:  # noqa: BLE001 - out of memory is retried; anything else is agreed on below
                if is_out_of_memory(err):
                    raise
                return ScoringFailed(err)

        agree = self.group.any if self.group is not None else None
        if self.batch_size is None:  # from the token budget of the model's device (small batches on CPU)
            self.batch_size = distributed.default_batch_size(encoded, options["device"], model)
        local, self.batch_size, failed_sizes = retry_on_oom(run, self.batch_size, agree=agree)
        failed = isinstance(local, ScoringFailed)
        if self.group is not None and self.group.any(failed) and not failed:
            local = ScoringFailed(RuntimeError("scoring failed on another process of the run; see its log"))
        if isinstance(local, ScoringFailed):
            raise local.error
        stats = local if self.group is None else distributed.gather_stats(local, encoded, self.group)
        return stats, failed_sizes

    def decide(self, result: AuditResult) -> Any:
        if self.policy is None:
            return None
        from ..gate import evaluate_result

        try:
            decision = evaluate_result(self.policy, result)
        except Exception as err:  # noqa: BLE001 - e.g. figures the policy cannot judge
            result.notes.append(f"the release gate could not judge this audit: {err}")
            logger.error("mia_guard: the release gate could not judge the audit at step %d: %s", result.step, err)
            return None
        self.decisions[result.step] = decision
        return decision

    def _account(self, step: int, started: float) -> None:
        """An audit (or a failed one) at ``step`` that began at ``started``: its wall time to the
        totals and the cadence; in a distributed run all processes then share the next decision step."""
        seconds = time.perf_counter() - started
        self.seconds["audits"] += seconds
        self.cadence.record(int(step), seconds)
        self.cadence.shared_next_check(self.group)

    def _store(self) -> HistoryWriter:
        """The writer of ``history.json``'s store (a new one when the run was neither started nor resumed)."""
        if self.writer is None:
            self.writer = self.history.store(self.history_path)
        return self.writer

    def _record_failure(self, step: int, reason: str) -> None:
        """A skipped audit: in the history (and its file), in :attr:`skipped`, in the log."""
        self.skipped[int(step)] = reason
        self.history.record_failure(step, reason)
        if self.is_main:  # the other processes log their own cause in audit()
            logger.error("mia_guard: the audit at step %d failed and is skipped; training goes on: %s", step, reason)
            guarded("saving history.json", lambda: self._store().record_failure(step, reason))

    def publish(self, result: AuditResult, decision: Any, new: Mapping[str, float] | None = None) -> None:
        """Append the audit to the history store and write every sink; a write that fails (disk
        full, a tracker down) is logged and noted in the result, and training goes on (the store
        writes the audit with the next one it can take). ``new``: the audit was published
        before and gained these scalars (the final extraction): the store's copy is replaced
        and the sinks get :meth:`Sink.update` with the new scalars only."""
        if new is None:
            error = guarded("saving history.json", lambda: self._store().append(result))
        else:
            error = guarded("saving history.json", lambda: self._store().replace_last(result))
        if error is not None:
            result.notes.append(f"{self.history_path} could not be written after this audit ({error})")
        for sink in self.sinks:
            if new is None:
                guarded(f"{type(sink).__name__}.write", sink.write, result, decision)
            else:
                guarded(f"{type(sink).__name__}.update", sink.update, result, decision, new)
        logger.info("mia_guard audit at step %d:\n%s", result.step, result.table())
        if decision is not None:
            logger.info("mia_guard release gate at step %d: %s", result.step, decision.verdict)

