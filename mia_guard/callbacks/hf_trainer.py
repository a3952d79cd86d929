"""MIAAuditCallback: membership-inference audits inside a Hugging Face ``Trainer`` run.

    from mia_guard import CanarySet
    from mia_guard.callbacks import MIAAuditCallback

    canaries = CanarySet.generate(256, "code_credential", seed=0)
    train_texts = canaries.insert_into(train_texts, repetitions=8)
    ...
    trainer = Trainer(model, args, train_dataset=..., processing_class=tokenizer,
                      callbacks=[MIAAuditCallback(canaries, every_n_steps=200)])
    trainer.train()

Events (``global_step`` counts optimizer steps):

* ``on_train_begin``: audits the model before its first update (step 0 in a fresh run).
  The first audit is the reference for calibrated attacks (``reference``,
  ``lira_online_ref``, ...), so leave ``audit_on_train_begin`` on for them. A run resumed
  from a checkpoint keeps the curve it had (and its reference) and is not audited here,
  so its curve is the one an uninterrupted run would have drawn.
* ``on_step_end``: audits when ``global_step % every_n_steps == 0``, or, with
  ``overhead_budget``, whenever the audits so far fit in that fraction of the measured
  training time (:mod:`mia_guard.callbacks.cadence`); and the final model at the step
  where the Trainer stops (see below).
* ``on_evaluate``: audits after each evaluation when ``audit_on_evaluate``.
* ``on_train_end``: a last audit (unless that step was just audited), the ROC image,
  the report files (``report.json``, ``report.md``, ``leakage.png``, ``roc.png``) and
  the final release-gate verdict. The final audit also runs secret extraction
  (``extraction="final"``, see :mod:`mia_guard.callbacks.extraction_schedule`).

A step is never audited twice. Training is changed only through ``control``: with a
release policy and ``stop_on_blocked=True``, a ``blocked`` verdict sets
``control.should_training_stop``. Auditing leaves weights, gradients, module modes and
every RNG exactly as they were, so a run with the callback ends with the same weights as
one without. Only the world-rank-0 process writes files; every rank takes part in the audit.

Files in ``output_dir`` (default ``<args.output_dir>/mia``, locked for this run):
``history.json`` and its record folder (the leakage curve, one checksummed file per
audit, appended after every audit; :mod:`mia_guard.audit.storage`), ``canaries.json``,
``audits.jsonl`` (one line of figures per audit) and the report files.

Trackers: the figures go wherever the Trainer reports (``report_to``; see
:mod:`mia_guard.callbacks.trainer_trackers` and ``docs/trackers.md``), under the same
``mia/...`` names. TensorBoard figures (see ``docs/tensorboard.md``) go into the
Trainer's TensorBoard run directory, beside the training loss; when the Trainer does
not report to TensorBoard, into ``$TENSORBOARD_LOGGING_DIR`` when set, else
``args.logging_dir`` on transformers versions that have it, else
``<args.output_dir>/runs/mia_guard``. MLflow and W&B get metrics on the Trainer's run;
other integrations get them through their own ``on_log``. ``sinks=[...]`` adds more.

The final audit runs in ``on_step_end`` of the step where the Trainer stops (so the
trackers still have their run open; several integrations close it in ``on_train_end``),
or in ``on_train_end`` when the stop came later or ``load_best_model_at_end`` swaps the
model.

Resuming: when training resumes from a checkpoint at step ``s`` and ``history.json``
exists in ``output_dir``, the curve continues from it (audits after ``s`` are dropped).
:meth:`MIAAuditCallback.state` follows transformers' stateful-callback contract:
JSON-able ``args`` that rebuild the callback, with its whole
:class:`~mia_guard.audit.config.AuditConfig` and the canaries by the path of
``canaries.json``. With ``TrainingArguments(restore_callback_states_from_checkpoint=True)``
the Trainer rebuilds the callback from the checkpoint; the tokenizer is then the
Trainer's ``processing_class``, checked against what the checkpoint recorded of the
original one (it must encode the canaries identically).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..audit.auditor import Auditor
from ..audit.config import AuditConfig, config_from_call
from ..canaries.canary_set import CanarySet
from ..canaries.encoding import EncodedCanaries
from .cadence import AuditCadence
from .canary_sets import SessionGroup
from .extraction_schedule import ExtractionSchedule
from .options import load_policy, resolve_audit_inputs
from .session import AuditSession
from .sinks.base import Sink
from .trainer_checks import check_batches_have_labels
from .trainer_trackers import calling_trainer, trainer_trackers

logger = logging.getLogger(__name__)

#: Sub-directory of ``args.output_dir`` for the audit files when ``output_dir`` is not given.
DEFAULT_SUBDIR = "mia"


class MIAAuditCallback(TrainerCallback, ExportableState):
    """Audits canary memorization every ``every_n_steps`` optimizer steps of a ``Trainer``.

    Args:
        canaries: the CanarySet whose members are in the training data, or the path of a
            canary file written by ``CanarySet.save``; or several named sets,
            ``{"credentials": set_a, "texts": set_b}``, each audited on its own with its
            figures under ``mia/<set>/...``, one report and one gate decision covering all
            (any blocked set blocks; see :mod:`mia_guard.callbacks.canary_sets`). Not
            needed when ``auditor`` is given.
        tokenizer: the training tokenizer; default is the Trainer's ``processing_class``
            (not needed for token-only canaries).
        config: the audit's :class:`~mia_guard.audit.config.AuditConfig` (attacks, FPR
            levels, confidence, folds, seed, analyses, batch size...), or its dict.
        every_n_steps: audit when ``global_step`` is a multiple of this; ``None`` for no
            periodic audits. With ``overhead_budget``: the shortest spacing between audits
            (``None`` lets the budget alone decide).
        overhead_budget: audit as often as keeps audit time within this fraction of the
            measured training time (e.g. ``0.03``), the first and final audits included
            (:mod:`mia_guard.callbacks.cadence`); ``None`` for the fixed ``every_n_steps``.
        audit_on_train_begin: audit before the first update (the reference model).
        audit_on_evaluate: audit after every evaluation.
        audit_on_train_end: audit the final model.
        output_dir: directory for the audit files; default ``<args.output_dir>/mia``.
        policy: a ``mia_guard.gate.ReleasePolicy``, its dict, or the path of its TOML
            file; checked after every audit.
        stop_on_blocked: stop training when the policy's verdict is ``blocked``.
        progress: show a progress bar while scoring (main process only).
        tensorboard: ``True`` for the Trainer's TensorBoard directory (see the module
            docstring), a directory path, or ``False`` for none.
        jsonl: write ``audits.jsonl``.
        extraction: when greedy secret extraction runs (its ``extraction_rate`` is what
            the gate's ``max_extraction_rate`` judges): ``"final"`` (default) at the final
            audit, an int N every N steps and at the final audit, ``None`` never; see
            :mod:`mia_guard.callbacks.extraction_schedule`.
        extraction_options: ``hint_tokens``, ``max_new_tokens``, ``batch_size`` of the extraction.
        trackers: ``True`` to send the figures to every tracker the Trainer reports to
            (``report_to``), ``False`` for none, or the ``report_to`` names to keep.
        sinks: further :class:`~mia_guard.callbacks.sinks.Sink` objects (main process only;
            not restored from a checkpoint: pass them again).
        auditor: a configured Auditor to use instead of building one (then ``canaries``
            may be ``None``, and neither ``config`` nor audit options may be given).
        reference_model, reference_tokenizer: an explicit reference model for the
            calibrated attacks instead of the step-0 model (e.g. the pretrained base when
            training resumes from a fine-tuned checkpoint); checked against the trained
            model's architecture, vocabulary and tokenizer at ``on_train_begin``, before
            the first step (:meth:`~mia_guard.audit.auditor.Auditor.prepare_reference`).
        **options: fields of :class:`~mia_guard.audit.config.AuditConfig` replacing those
            of ``config``, e.g. ``MIAAuditCallback(canaries, attacks=["loss"], seed=3)``.
    """

    def __init__(
        self,
        canaries: CanarySet | str | os.PathLike | None = None,
        tokenizer: Any = None,
        *,
        config: AuditConfig | Mapping[str, Any] | None = None,
        every_n_steps: int | None = 200,
        overhead_budget: float | None = None,
        audit_on_train_begin: bool = True,
        audit_on_evaluate: bool = False,
        audit_on_train_end: bool = True,
        output_dir: str | os.PathLike | None = None,
        policy: Any = None,
        stop_on_blocked: bool = False,
        progress: bool = True,
        tensorboard: bool | str | os.PathLike = True,
        jsonl: bool = True,
        extraction: Any = "final",
        extraction_options: Mapping[str, Any] | None = None,
        trackers: bool | Sequence[str] = True,
        sinks: Sequence[Sink] = (),
        auditor: Auditor | None = None,
        reference_model: Any = None,
        reference_tokenizer: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(trackers, bool) and (isinstance(trackers, str) or not all(isinstance(t, str) for t in trackers)):
            raise TypeError(f"trackers must be True, False or a list of report_to names, got {trackers!r}")
        canaries = resolve_audit_inputs(
            "MIAAuditCallback", canaries, auditor, every_n_steps, stop_on_blocked, policy,
            configured=config is not None or bool(options),
        )
        self.canaries = auditor.canaries if auditor is not None else canaries
        self.config = auditor.config if auditor is not None else config_from_call(MIAAuditCallback, config, options)
        self.tokenizer = tokenizer
        self.reference_model = reference_model
        self.reference_tokenizer = reference_tokenizer
        #: what identifies the audit's tokenizer (set when training begins, or restored from a checkpoint)
        self.tokenizer_identity: dict | None = None
        self.every_n_steps = every_n_steps
        self.overhead_budget = AuditCadence(every_n_steps, overhead_budget).budget  # validated now
        self.audit_on_train_begin = audit_on_train_begin
        self.audit_on_evaluate = audit_on_evaluate
        self.audit_on_train_end = audit_on_train_end
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.policy_source = _policy_source(policy)
        self.policy = load_policy(policy)
        self.stop_on_blocked = stop_on_blocked
        self.progress = progress
        self.tensorboard = tensorboard
        self.jsonl = jsonl
        self.extraction = ExtractionSchedule.from_option(extraction, extraction_options)
        self.trackers = trackers if isinstance(trackers, bool) else list(trackers)
        self.sinks = list(sinks)
        #: the report_to names the figures went to (set when training begins)
        self.tracker_names: list[str] = []
        self.auditor = auditor
        #: set name -> Auditor, for named canary sets (``None`` otherwise)
        self.auditors: dict[str, Auditor] | None = None
        self.session: AuditSession | SessionGroup | None = None
        self.stopped_early = False
        self.report_paths: dict[str, Path] = {}

    # ------------------------------------------------------------------ public views
    @property
    def history(self):
        """The run's :class:`~mia_guard.audit.result.AuditHistory` (``None`` before training
        starts); with named canary sets, ``{set name: AuditHistory}``."""
        if self.auditors is not None:
            return {name: a.history for name, a in self.auditors.items()}
        return self.auditor.history if self.auditor is not None else None

    @property
    def last_decision(self) -> Any:
        """The release-gate decision of the latest audit (``None`` without a policy)."""
        return self.session.last_decision if self.session is not None else None

    def state(self) -> dict:
        """JSON-able state for checkpoints (transformers' ``ExportableState`` contract).

        ``args`` rebuild the callback: the whole :class:`~mia_guard.audit.config.AuditConfig`
        (``config``), the training-loop options, and the canaries as the path of
        ``canaries.json``. A tokenizer object cannot go into JSON: ``attributes`` record
        what identifies it (``tokenizer_identity``: class, ``name_or_path``, vocabulary
        size and a hash of the canaries' token ids), and a callback the Trainer restores
        from a checkpoint (``TrainingArguments(restore_callback_states_from_checkpoint=True)``)
        uses the Trainer's ``processing_class`` and refuses one that encodes the canaries
        differently.
        """
        if isinstance(self.session, SessionGroup):
            canary_files: Any = {name: str(s.canary_path) for name, s in self.session.sessions.items()}
        else:
            canary_files = str(self.session.canary_path) if self.session is not None else None
        output_dir = self.session.output_dir if self.session is not None else self.output_dir
        return {
            "args": {
                "canaries": canary_files,
                "config": self.config.to_dict(),
                "every_n_steps": self.every_n_steps,
                "overhead_budget": self.overhead_budget,
                "audit_on_train_begin": self.audit_on_train_begin,
                "audit_on_evaluate": self.audit_on_evaluate,
                "audit_on_train_end": self.audit_on_train_end,
                "output_dir": str(output_dir) if output_dir is not None else None,
                "policy": self.policy_source,
                "stop_on_blocked": self.stop_on_blocked,
                "progress": self.progress,
                "tensorboard": self.tensorboard if isinstance(self.tensorboard, bool) else str(self.tensorboard),
                "jsonl": self.jsonl,
                "trackers": self.trackers,
                "extraction": self.extraction.to_dict() if self.extraction is not None else None,
            },
            "attributes": {"stopped_early": self.stopped_early, "tokenizer_identity": self.tokenizer_identity},
        }

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        is_main = bool(state.is_world_process_zero)
        # transformers < 4.46 passes the Trainer's tokenizer as `tokenizer`
        tokenizer = next((t for t in (self.tokenizer, processing_class, kwargs.get("tokenizer")) if t is not None), None)
        auditors = self._auditors(tokenizer, is_main)
        for auditor in auditors.values():
            auditor.prepare_reference(model)  # a wrong reference_model fails here, before the first step
        identity = {name: tokenizer_identity(a.tokenizer, a.encoded) for name, a in auditors.items()}
        identity = identity[None] if None in identity else identity
        _check_same_tokenizer(self.tokenizer_identity, identity)
        self.tokenizer_identity = identity
        first = next(iter(auditors.values()))
        if self.policy is not None:
            self.policy.check_compatible(fprs=first.fprs, confidence=first.confidence)
        trainer = calling_trainer(self)
        check_batches_have_labels(trainer, kwargs.get("train_dataloader"))
        found = None
        if is_main:
            callbacks = trainer.callback_handler.callbacks if trainer is not None else None
            found = trainer_trackers(callbacks, args, state, control, self.trackers)
            self.tracker_names = found.names
        session_class = SessionGroup if self.auditors is not None else AuditSession
        self.session = session_class(
            self.auditors if self.auditors is not None else self.auditor,
            self.output_dir or Path(args.output_dir) / DEFAULT_SUBDIR,
            tensorboard_dir=self._tensorboard_dir(args, found.tensorboard_dir if found is not None else None),
            jsonl=self.jsonl,
            sinks=[*(found.sinks if found is not None else ()), *self.sinks],
            policy=self.policy,
            extraction=self.extraction,
            is_main=is_main,
            cadence=AuditCadence(self.every_n_steps, self.overhead_budget),
        )
        if state.global_step > 0:
            self.session.resume(state.global_step)
        else:
            self.session.start_fresh()
        # a resumed run keeps its step-0 reference; it audits at the checkpoint only when no curve survived
        curve = all(len(a.history) for a in auditors.values())
        if self.audit_on_train_begin and (state.global_step == 0 or not curve):
            control = self._audit(state, control, model)
        self.session.cadence.start_training(state.global_step)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        final = self.audit_on_train_end and self._stops_here(args, state, control)
        due = self.session.cadence.due(state.global_step, self.session.group)  # every rank asks, always
        if final or due:
            return self._audit(state, control, model, final=final)
        return control

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.audit_on_evaluate:
            return self._audit(state, control, model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.session is None:
            return control
        if self.audit_on_train_end:
            control = self._audit(state, control, model, final=True)
        run_info = {
            "global_step": int(state.global_step),
            "max_steps": int(state.max_steps),
            "every_n_steps": self.every_n_steps,
            "stopped_early": self.stopped_early,
            "model": type(model).__name__ if model is not None else None,
        }
        self.report_paths = self.session.finish(run_info)
        return control

    # ------------------------------------------------------------------ internals
    def _audit(self, state, control, model, final: bool = False):
        if model is None:
            raise ValueError("the Trainer passed no model to MIAAuditCallback; it cannot audit")
        if self.session.audited(state.global_step):
            if final:
                self.session.extract_after(model, state.global_step)
            return control
        _, decision = self.session.audit(model, state.global_step, final=final)
        if decision is not None and decision.verdict == "blocked" and self.stop_on_blocked:
            control.should_training_stop = True
            self.stopped_early = True
            if state.is_world_process_zero:
                logger.warning(
                    "mia_guard: release gate blocked at step %d; stopping training (stop_on_blocked=True): %s",
                    state.global_step,
                    "; ".join(decision.reasons),
                )
        return control

    def _auditors(self, tokenizer: Any, is_main: bool) -> dict:
        """``{set name: Auditor}`` (``{None: auditor}`` for a single unnamed set), built once."""
        if self.auditor is not None:
            return {None: self.auditor}
        if self.auditors is None:
            sets = self.canaries if isinstance(self.canaries, Mapping) else {None: self.canaries}
            if tokenizer is None and any(c.kind != "tokens" for c in sets.values()):
                raise ValueError(
                    "MIAAuditCallback needs a tokenizer for text canaries: pass tokenizer=... or give the Trainer "
                    "processing_class=tokenizer"
                )
            built = {
                name: Auditor(c, tokenizer, config=self.config, progress=self.progress and is_main,
                              reference_model=self.reference_model, reference_tokenizer=self.reference_tokenizer)
                for name, c in sets.items()
            }
            if None in built:
                self.auditor = built[None]
                return built
            self.auditors = built
        return dict(self.auditors)

    @staticmethod
    def _stops_here(args, state, control) -> bool:
        """Training ends after this step with the model as it is (the final audit can run
        now, while the trackers' runs are still open)."""
        if getattr(args, "load_best_model_at_end", False):
            return False  # on_train_end audits the best checkpoint the Trainer loads
        return bool(control.should_training_stop) or (state.max_steps > 0 and state.global_step >= state.max_steps)

    def _tensorboard_dir(self, args, trainer_dir: Path | None) -> Path | None:
        if self.tensorboard is False:
            return None
        if self.tensorboard is not True:
            return Path(self.tensorboard)
        if trainer_dir is not None:
            return trainer_dir
        env = os.environ.get("TENSORBOARD_LOGGING_DIR")
        if env:
            return Path(env).expanduser()
        legacy = getattr(args, "logging_dir", None)  # transformers < 5
        if legacy:
            return Path(legacy)
        return Path(args.output_dir) / "runs" / "mia_guard"


def tokenizer_identity(tokenizer: Any, encoded: EncodedCanaries) -> dict[str, Any]:
    """What identifies the tokenizer of an audit, as JSON: its class, ``name_or_path`` and
    vocabulary size (``None`` where it has none, e.g. token canaries without a tokenizer),
    and ``canary_tokens_sha256``, a hash of the canaries' token ids and scored ranges,
    which is what the audit depends on."""
    digest = hashlib.sha256()
    for ids, start, end in zip(encoded.input_ids, encoded.start, encoded.end):
        digest.update(json.dumps([list(map(int, ids)), int(start), int(end)]).encode())
    size = len(tokenizer) if tokenizer is not None and hasattr(tokenizer, "__len__") else None
    return {
        "class": type(tokenizer).__name__ if tokenizer is not None else None,
        "name_or_path": getattr(tokenizer, "name_or_path", None) or None,
        "vocab_size": size,
        "canary_tokens_sha256": digest.hexdigest(),
    }


def _check_same_tokenizer(recorded: dict | None, current: dict) -> None:
    """Refuse a tokenizer that encodes the canaries differently from the checkpointed run's
    (with named sets, both are ``{set name: identity}``)."""
    if recorded is None:
        return
    if "canary_tokens_sha256" not in current:  # named sets
        for name, identity in current.items():
            _check_same_tokenizer(recorded.get(name), identity)
        return
    if recorded.get("canary_tokens_sha256") == current["canary_tokens_sha256"]:
        return
    raise ValueError(
        "MIAAuditCallback was restored from a checkpoint whose audits used another tokenizer "
        f"({recorded.get('class')} {recorded.get('name_or_path')!r}, {recorded.get('vocab_size')} tokens); "
        f"this run's ({current['class']} {current['name_or_path']!r}, {current['vocab_size']} tokens) encodes the "
        "canaries differently, so its audits would not continue the curve. Give the Trainer the original "
        "tokenizer as processing_class"
    )


def _policy_source(policy: Any) -> Any:
    """What ``state()`` records to rebuild the policy: the TOML path or the dict (JSON-able)."""
    if policy is None or isinstance(policy, Mapping):
        return dict(policy) if policy is not None else None
    if isinstance(policy, (str, os.PathLike)):
        return str(policy)
    to_dict = getattr(policy, "to_dict", None)
    return to_dict() if callable(to_dict) else None
