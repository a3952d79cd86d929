"""Experiment-tracker sinks: the scalar figures of every audit in MLflow, Weights & Biases,
Accelerate's trackers, or any Hugging Face ``Trainer`` integration.

Every sink writes the scalars of :func:`~mia_guard.callbacks.sinks.scalars.audit_scalars`
under ``mia/<name>`` at the audit's step (the optimizer step), the names TensorBoard
shows; MLflow gets :func:`~mia_guard.callbacks.sinks.scalars.portable_tag` names because
it refuses ``@`` and ``%``. The gate verdict goes where the tracker keeps text (an MLflow
tag, the W&B run summary; ``mia/gate``). The tracker client is imported when the sink is
built, so a missing package fails at set-up, not in the middle of training.

:class:`~mia_guard.callbacks.MIAAuditCallback` builds these from the Trainer's
``report_to`` (see :mod:`mia_guard.callbacks.trainer_trackers`);
:class:`~mia_guard.callbacks.AuditLoop` builds :class:`AccelerateTrackerSink` from
``accelerator=``. Any of them can be passed as ``sinks=[...]``.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Iterable, Mapping

from ...audit.result import AuditResult
from .base import Sink
from .scalars import audit_scalars, portable_tag

logger = logging.getLogger(__name__)

#: Name of the gate verdict where a tracker keeps text (MLflow tag, W&B summary key).
GATE_KEY = "mia/gate"
#: MLflow accepts at most this many metrics in one ``log_batch`` call.
MLFLOW_BATCH = 1000


def tracker_values(result: AuditResult, portable: bool = False) -> dict[str, float]:
    """``{"mia/<tag>": value}`` of one audit (every value finite; unresolvable figures left
    out); with ``portable``, names as :func:`portable_tag` spells them."""
    return named(audit_scalars(result)[0], portable)


def named(scalars: Mapping[str, float], portable: bool = False) -> dict[str, float]:
    """``{tag: value}`` of :func:`audit_scalars` as trackers name them (``mia/<tag>``)."""
    return {(portable_tag(f"mia/{tag}") if portable else f"mia/{tag}"): value for tag, value in scalars.items()}


class _TrackerSink(Sink):
    """A sink that logs scalars at a step: :meth:`write` logs every figure of the audit,
    :meth:`update` only the new ones (so no tracker holds a point twice)."""

    def write(self, result: AuditResult, decision: Any = None) -> None:
        self.log(int(result.step), audit_scalars(result)[0], decision)

    def update(self, result: AuditResult, decision: Any, new: Mapping[str, float]) -> None:
        self.log(int(result.step), new, decision)

    def log(self, step: int, scalars: Mapping[str, float], decision: Any) -> None:
        raise NotImplementedError


class MLflowSink(_TrackerSink):
    """Audit figures as metrics of one MLflow run, at the audit's step.

    Writes through :class:`mlflow.tracking.MlflowClient` to the run by id, so figures
    still arrive after the run was ended (the Trainer's MLflow integration ends its run
    before the final audit is written).

    Args:
        run_id: the run; default the active run (``mlflow.active_run()``, e.g. the one the
            Trainer's MLflow integration started).
        tracking_uri: the tracking store; default ``mlflow.get_tracking_uri()``.

    Raises:
        ImportError: mlflow is not installed.
        ValueError: no ``run_id`` and no active run.
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None) -> None:
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise ImportError(f"MLflowSink needs the mlflow package ({err}); pip install mlflow") from err
        if run_id is None:
            run = mlflow.active_run()
            if run is None:
                raise ValueError("MLflowSink needs a run: pass run_id=..., or start one first with mlflow.start_run()")
            run_id = run.info.run_id
        self.run_id = run_id
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)

    def log(self, step: int, scalars: Mapping[str, float], decision: Any) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in named(scalars, portable=True).items()]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MLFLOW_BATCH])
        if decision is not None:
            self.client.set_tag(self.run_id, GATE_KEY, decision.verdict)


class WandbSink(_TrackerSink):
    """Audit figures in a Weights & Biases run, plotted against the training step.

    W&B keeps its own step counter, which must only grow, so the optimizer step goes in
    a step metric: ``step_metric`` (the Trainer's integration uses
    ``"train/global_step"``, which puts leakage on the loss's x-axis) or, by default,
    ``"mia/step"``, declared with ``define_metric`` for the ``mia/*`` figures.

    Args:
        run: a ``wandb`` run; default the current one (``wandb.run``).
        step_metric: the metric that carries the step (see above).

    Raises:
        ImportError: wandb is not installed.
        ValueError: no ``run`` and no current run (``wandb.init`` not called).
    """

    def __init__(self, run: Any = None, step_metric: str | None = None) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError(f"WandbSink needs the wandb package ({err}); pip install wandb") from err
        run = run if run is not None else wandb.run
        if run is None:
            raise ValueError("WandbSink needs a run: pass run=..., or call wandb.init() first")
        self.run = run
        if step_metric is None:
            step_metric = "mia/step"
            run.define_metric(step_metric)
            run.define_metric("mia/*", step_metric=step_metric)
        self.step_metric = step_metric

    def log(self, step: int, scalars: Mapping[str, float], decision: Any) -> None:
        self.run.log({**named(scalars), self.step_metric: step})
        if decision is not None:
            self.run.summary[GATE_KEY] = decision.verdict


class AccelerateTrackerSink(_TrackerSink):
    """Audit figures in every tracker of an ``accelerate.Accelerator`` (those of
    ``accelerator.init_trackers``), at the audit's step, as ``accelerator.log`` would send
    them, with MLflow-safe names for the MLflow tracker.

    Args:
        accelerator: the loop's Accelerator (its trackers exist on the main process only).
        exclude: tracker names to leave out (e.g. ``"tensorboard"`` when mia_guard's own
            TensorBoard sink writes beside that tracker).
    """

    def __init__(self, accelerator: Any, exclude: Iterable[str] = ()) -> None:
        self.accelerator = accelerator
        self.exclude = frozenset(exclude)

    def log(self, step: int, scalars: Mapping[str, float], decision: Any) -> None:
        for tracker in self.accelerator.trackers:
            if tracker.name not in self.exclude:
                tracker.log(named(scalars, portable=tracker.name == "mlflow"), step=step)


class TrainerIntegrationSink(_TrackerSink):
    """Audit figures sent through one Hugging Face Trainer integration's own ``on_log``:
    the Trainer's logging path, for integrations without a dedicated sink (Comet, Neptune,
    ClearML, DVCLive, ...). The integration names them as it names the Trainer's logs
    (most add ``train/``: ``train/mia/loss/auc``) and logs them at the audit's step.

    Args:
        integration: the integration's ``TrainerCallback`` (from the Trainer's callbacks).
        args, state, control: the Trainer's ``TrainingArguments``, ``TrainerState`` and
            ``TrainerControl`` (the state is copied with the audit's step for each write).
    """

    def __init__(self, integration: Any, args: Any, state: Any, control: Any) -> None:
        self.integration = integration
        self.args, self.state, self.control = args, state, control

    @property
    def name(self) -> str:
        return type(self.integration).__name__

    def log(self, step: int, scalars: Mapping[str, float], decision: Any) -> None:
        state = copy.copy(self.state)
        state.global_step = step
        self.integration.on_log(self.args, state, self.control, logs=named(scalars))
