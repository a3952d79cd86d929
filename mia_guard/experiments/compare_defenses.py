"""The defenses ``mia-guard compare`` trains the demo under, one ingredient changed each.

Each :class:`Defense` turns the demo's training texts and config into a
:class:`TrainingPlan` (texts, model, collator, ``TrainingArguments`` overrides, trainer
class) for :func:`mia_guard.experiments.demo.build_trainer`; everything else (data, canaries,
steps, batch size, learning rate, audits) stays as in the ``none`` run.

================  ======================================================================
name              what changes against ``none``
================  ======================================================================
``none``          nothing: the demo as is
``weight_decay``  AdamW weight decay 0.1 (regularization preset)
``dropout``       dropout 0.1 on every dropout site (regularization preset)
``label_smoothing`` label smoothing 0.1 (regularization preset)
``goldfish``      goldfish loss, k = 4, h = 13: a hashed 1/4 of the tokens leave the loss
``dp_eps8``       DP-SGD (Opacus) calibrated to ε = 8 over the run, clip 1.0
``dp_eps1``       DP-SGD calibrated to ε = 1
``dedup``         exact deduplication of the training texts: each member canary once
================  ======================================================================

Output perturbation changes no training; :data:`OUTPUT_SETTINGS` are the views of the
``none`` model an API could return (:class:`~mia_guard.defenses.PerturbedOutputModel`).

Importing this module imports no torch (the demo is imported when a plan is built), so
``mia-guard --help`` can list the defenses cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .demo import DemoConfig

#: Goldfish parameters of the ``goldfish`` defense (the paper's defaults).
GOLDFISH = {"k": 4, "h": 13, "key": 0}
#: Per-sample clipping bound of the DP defenses.
DP_MAX_GRAD_NORM = 1.0

#: Output-perturbation settings audited on the ``none`` model: name -> PerturbedOutputModel keywords.
OUTPUT_SETTINGS: dict[str, dict[str, Any]] = {
    "temperature_2": {"temperature": 2.0},
    "top_k_10": {"top_k": 10},
    "round_2": {"round_decimals": 2},
}


@dataclass
class TrainingPlan:
    """One defense's training run, as :func:`mia_guard.experiments.demo.build_trainer` takes it.

    Attributes:
        texts: the training texts (canaries inserted).
        model: the freshly initialised model.
        args_overrides: ``TrainingArguments`` fields to change.
        data_collator: ``None`` for the demo's collator.
        trainer_cls: ``None`` for ``transformers.Trainer``.
        trainer_kwargs: extra keyword arguments of ``trainer_cls``.
        notes: what the defense did, in words (e.g. how many texts dedup removed).
    """

    texts: list[str]
    model: Any
    args_overrides: dict[str, Any] = field(default_factory=dict)
    data_collator: Any = None
    trainer_cls: Any = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Defense:
    """A named defense: ``plan(config, texts, delta)`` builds its :class:`TrainingPlan`.

    ``delta`` is the δ of the audit's ε lower bounds; DP defenses promise their ε at it.
    """

    name: str
    label: str
    plan: Callable[[DemoConfig, list[str], float], TrainingPlan]


def build_model(config: DemoConfig) -> Any:
    """The demo's freshly initialised model (:func:`mia_guard.experiments.demo.build_model`)."""
    from .demo import build_model as build_demo_model

    return build_demo_model(config)


def _none(config: DemoConfig, texts: list[str], delta: float) -> TrainingPlan:
    return TrainingPlan(list(texts), build_model(config))


def _preset(name: str) -> Callable[[DemoConfig, list[str], float], TrainingPlan]:
    def plan(config: DemoConfig, texts: list[str], delta: float) -> TrainingPlan:
        from ..defenses import PRESETS, apply_preset

        model = build_model(config)
        overrides, _, keys = apply_preset(name, {}, model)
        dropout = PRESETS[name].dropout
        notes = [f"dropout {dropout} set on {len(keys)} sites"] if dropout else []
        return TrainingPlan(list(texts), model, args_overrides=overrides, notes=notes)

    return plan


def _goldfish(config: DemoConfig, texts: list[str], delta: float) -> TrainingPlan:
    from ..defenses import GoldfishCollator
    from .demo import MAX_LENGTH
    from .demo_assets import CausalLMCollator

    collator = GoldfishCollator(CausalLMCollator(max_length=MAX_LENGTH), **GOLDFISH)
    return TrainingPlan(list(texts), build_model(config), data_collator=collator)


def _dp(epsilon: float) -> Callable[[DemoConfig, list[str], float], TrainingPlan]:
    def plan(config: DemoConfig, texts: list[str], delta: float) -> TrainingPlan:
        from ..defenses.dp import DPConfig, DPTrainer

        dp_config = DPConfig(target_epsilon=epsilon, delta=delta, max_grad_norm=DP_MAX_GRAD_NORM)
        return TrainingPlan(
            list(texts), build_model(config), trainer_cls=DPTrainer, trainer_kwargs={"dp_config": dp_config}
        )

    return plan


def _dedup(config: DemoConfig, texts: list[str], delta: float) -> TrainingPlan:
    from ..defenses import deduplicate

    result = deduplicate(texts, near_threshold=None)  # exact copies: what canary repetition creates
    return TrainingPlan(result.kept_texts, build_model(config), notes=[result.summary()])


DEFENSES: dict[str, Defense] = {
    d.name: d
    for d in (
        Defense("none", "no defense", _none),
        Defense("weight_decay", "weight decay 0.1", _preset("weight_decay")),
        Defense("dropout", "dropout 0.1", _preset("dropout")),
        Defense("label_smoothing", "label smoothing 0.1", _preset("label_smoothing")),
        Defense("goldfish", f"goldfish k={GOLDFISH['k']} h={GOLDFISH['h']}", _goldfish),
        Defense("dp_eps8", "DP-SGD eps=8", _dp(8.0)),
        Defense("dp_eps1", "DP-SGD eps=1", _dp(1.0)),
        Defense("dedup", "dedup (exact)", _dedup),
    )
}


def check_names(names: Any, known: Mapping[str, Any], what: str) -> list[str]:
    """``names`` as a list, after checking each is a key of ``known`` and none repeats."""
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} listed twice: {names}")
    return names
