"""Where a Hugging Face ``Trainer`` reports, so the audit figures go there too.

The Trainer turns ``TrainingArguments(report_to=[...])`` into integration callbacks
(``TensorBoardCallback``, ``MLflowCallback``, ``WandbCallback``, ...) placed before the
user's callbacks, so by the time :class:`~mia_guard.callbacks.MIAAuditCallback` sees
``on_train_begin`` each integration has opened its run. :func:`trainer_trackers` turns
them into sinks:

* TensorBoard: the integration's run directory (``TensorBoardCallback.logging_dir``),
  where mia_guard's own TensorBoard sink writes beside the training loss;
* MLflow (and DagsHub, which is MLflow): :class:`~.sinks.trackers.MLflowSink` on the
  active run the integration started;
* Weights & Biases: :class:`~.sinks.trackers.WandbSink` on ``wandb.run``, with the
  integration's x-axis ``train/global_step``;
* any other integration that logs (Comet, Neptune, ClearML, DVCLive, SwanLab, Trackio,
  AzureML, ...): :class:`~.sinks.trackers.TrainerIntegrationSink`, through its own
  ``on_log``.

Why not ``Trainer.log``: it appends to ``state.log_history``, adds ``epoch``, is not
reachable from a callback, and most integrations prefix its keys (``train/...``); the
dedicated sinks keep the ``mia/...`` names and the audit's step.

The integrations are found through the Trainer that is calling the callback
(:func:`calling_trainer`); when the callback is driven some other
way, ``args.report_to`` names them and the trackers' current runs are used
(``mlflow.active_run()``, ``wandb.run``), and TensorBoard's directory is the one
``TENSORBOARD_LOGGING_DIR`` names, if any.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from .sinks.base import Sink
from .sinks.trackers import MLflowSink, TrainerIntegrationSink, WandbSink

logger = logging.getLogger(__name__)

#: The Trainer integration's x-axis in W&B (its ``define_metric`` step metric).
WANDB_TRAINER_STEP = "train/global_step"
#: How many frames up to look for the Trainer (event -> CallbackHandler.call_event ->
#: CallbackHandler.on_<event> -> the Trainer's loop).
_FRAMES = 8


@dataclass
class TrainerTrackers:
    """What the Trainer reports to, as mia_guard uses it.

    Attributes:
        tensorboard_dir: the Trainer's TensorBoard run directory, ``None`` when it does not
            report to TensorBoard (or the directory is not known).
        sinks: sinks for the other trackers, in the Trainer's order.
        names: the integration names (as in ``report_to``) that got a sink or the directory.
    """

    tensorboard_dir: Path | None = None
    sinks: list[Sink] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def calling_trainer(callback: Any) -> Any:
    """The ``Trainer`` whose training loop is calling ``callback`` now (call this from inside
    one of its events), or ``None`` when no Trainer is: the frame a few levels up whose
    ``self`` is a Trainer holding ``callback`` in its ``callback_handler``."""
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(_FRAMES):
        frame = frame.f_back
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer) and any(c is callback for c in owner.callback_handler.callbacks):
            return owner
    return None


def integration_name(integration: Any) -> str | None:
    """The ``report_to`` name of a Trainer integration callback, ``None`` for other callbacks."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name, cls in INTEGRATION_TO_CALLBACK.items():
        if type(integration) is cls:
            return name
    for name, cls in INTEGRATION_TO_CALLBACK.items():  # a subclass of an integration
        if isinstance(integration, cls):
            return name
    return None


def trainer_trackers(
    callbacks: Sequence[Any] | None, args: Any, state: Any, control: Any, wanted: bool | Sequence[str] = True
) -> TrainerTrackers:
    """Sinks for the trackers the Trainer reports to (main process; see the module docstring).

    Args:
        callbacks: the Trainer's callbacks (``trainer.callback_handler.callbacks``), or ``None``
            to go by ``args.report_to`` alone.
        args, state, control: the Trainer's arguments, state and control.
        wanted: ``True`` for every integration, ``False`` for none, or ``report_to`` names
            to keep (others are ignored).
    """
    found = TrainerTrackers()
    if wanted is False:
        return found
    if callbacks is None:
        integrations = [(name, None) for name in _report_to(args)]
    else:
        integrations = [(integration_name(cb), cb) for cb in callbacks]
        integrations = [(name, cb) for name, cb in integrations if name is not None]
    for name, integration in integrations:
        if wanted is not True and name not in wanted:
            continue
        if name == "tensorboard":
            found.tensorboard_dir = _tensorboard_dir(integration)
            if found.tensorboard_dir is None:
                continue
        else:
            sink = _sink(name, integration, args, state, control)
            if sink is None:
                continue
            found.sinks.append(sink)
        found.names.append(name)
    return found


def _report_to(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    return [report_to] if isinstance(report_to, str) else list(report_to)


def _tensorboard_dir(integration: Any) -> Path | None:
    directory = getattr(integration, "logging_dir", None) or os.environ.get("TENSORBOARD_LOGGING_DIR")
    return Path(directory).expanduser() if directory else None


def _sink(name: str, integration: Any, args: Any, state: Any, control: Any) -> Sink | None:
    try:
        if name in ("mlflow", "dagshub"):
            return MLflowSink()
        if name == "wandb":
            return WandbSink(step_metric=WANDB_TRAINER_STEP)
    except (ImportError, ValueError) as err:
        logger.warning("mia_guard: the Trainer reports to %s, but the audit figures cannot follow: %s", name, err)
        return None
    if integration is None:
        logger.warning(
            "mia_guard: the Trainer reports to %s; the audit figures reach it only when MIAAuditCallback is "
            "called by the Trainer (or pass sinks=[...])", name,
        )
        return None
    if type(integration).on_log is TrainerCallback.on_log:  # e.g. codecarbon: tracks, never logs metrics
        return None
    return TrainerIntegrationSink(integration, args, state, control)
