"""Regularization presets for the defense comparison: weight decay, dropout, label smoothing.

Each preset fixes all three knobs, so a comparison between presets changes one
thing at a time against the ``"off"`` baseline:

===================  ============  =======  ===============
preset               weight decay  dropout  label smoothing
===================  ============  =======  ===============
``off``              0.0           0.0      0.0
``weight_decay``     0.1           0.0      0.0
``dropout``          0.0           0.1      0.0
``label_smoothing``  0.0           0.0      0.1
``combined``         0.1           0.1      0.1
===================  ============  =======  ===============

Weight decay and label smoothing go into the ``TrainingArguments`` keyword arguments
(``weight_decay``, ``label_smoothing_factor``); dropout goes into the model config
(every dropout-like attribute, :func:`set_dropout`) or, for a built model, also into
its dropout modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

# Config attribute names that hold a dropout probability across HF architectures:
# resid_pdrop, embd_pdrop, attn_pdrop, hidden_dropout_prob, attention_probs_dropout_prob,
# dropout, attention_dropout, activation_dropout, hidden_dropout, dropout_rate, ...
# (layerdrop and drop_path_rate drop whole layers, not activations, and are left alone).
_DROPOUT_NAME = re.compile(r"(dropout|pdrop)(_prob|_rate)?$")


@dataclass(frozen=True)
class RegularizationPreset:
    """One setting of the three regularization knobs.

    Attributes:
        name: preset name (a key of :data:`PRESETS` for the built-in ones).
        weight_decay: AdamW decoupled weight decay (``TrainingArguments.weight_decay``).
        dropout: dropout probability set on every dropout-like config attribute.
        label_smoothing: ``TrainingArguments.label_smoothing_factor``.
        description: one line for reports.
    """

    name: str
    weight_decay: float
    dropout: float
    label_smoothing: float
    description: str = ""

    def __post_init__(self) -> None:
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for field in ("dropout", "label_smoothing"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{field} must lie in [0, 1), got {value}")


PRESETS: dict[str, RegularizationPreset] = {
    p.name: p
    for p in (
        RegularizationPreset("off", 0.0, 0.0, 0.0, "no regularization; the baseline for the others"),
        RegularizationPreset("weight_decay", 0.1, 0.0, 0.0, "AdamW weight decay 0.1"),
        RegularizationPreset("dropout", 0.0, 0.1, 0.0, "dropout 0.1 on every dropout site"),
        RegularizationPreset("label_smoothing", 0.0, 0.0, 0.1, "label smoothing 0.1"),
        RegularizationPreset("combined", 0.1, 0.1, 0.1, "weight decay 0.1 + dropout 0.1 + label smoothing 0.1"),
    )
}


class PresetApplication(NamedTuple):
    """What :func:`apply_preset` returns.

    Attributes:
        training_args_kwargs: a new dict: the given kwargs plus ``weight_decay`` and
            ``label_smoothing_factor``; pass it as ``TrainingArguments(**kwargs)``.
        config: the model config or model, changed in place (the same object).
        dropout_keys: what :func:`set_dropout` set.
    """

    training_args_kwargs: dict
    config: Any
    dropout_keys: list


def _is_config(obj: Any) -> bool:
    from transformers import PretrainedConfig

    return isinstance(obj, PretrainedConfig)


def _config_dropout_keys(config: Any, prefix: str = "") -> list[tuple[Any, str, str]]:
    """``(owner, attribute, dotted name)`` of every numeric dropout-like attribute, sub-configs included."""
    found = []
    for attr, value in sorted(vars(config).items()):
        if _is_config(value):
            found.extend(_config_dropout_keys(value, f"{prefix}{attr}."))
        elif _DROPOUT_NAME.search(attr) and isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((config, attr, prefix + attr))
    return found


def _module_dropout_sites(model: Any) -> list[tuple[Any, str, str]]:
    """``(module, attribute, dotted name)`` of dropout modules' ``p`` and float dropout attributes."""
    from torch.nn.modules.dropout import _DropoutNd

    found = []
    for path, module in model.named_modules():
        if isinstance(module, _DropoutNd):
            found.append((module, "p", f"{path}.p" if path else "p"))
            continue
        for attr, value in sorted(vars(module).items()):
            if _DROPOUT_NAME.search(attr) and isinstance(value, float):
                found.append((module, attr, f"{path}.{attr}" if path else attr))
    return found


def set_dropout(config_or_model: Any, p: float, *, allow_missing: bool = False) -> list[str]:
    """Set every dropout probability of a HF config (or of a built model) to ``p``.

    Args:
        config_or_model: a ``PretrainedConfig`` (set it before building the model), or
            a ``torch.nn.Module`` with a ``.config``: then its config *and* its already
            built dropout sites (``nn.Dropout`` modules, float attributes such as
            ``attention_dropout`` that attention code reads at run time) are set.
        p: dropout probability in ``[0, 1)``.
        allow_missing: do not raise when nothing dropout-like is found (used for
            ``p == 0``: a model without dropout already has none).

    Returns:
        the dotted names that were set: config keys (``"resid_pdrop"``,
        ``"text_config.attention_dropout"``) and, for a model, module sites prefixed
        with ``"module:"`` (``"module:transformer.h.0.attn.attn_dropout.p"``).

    Changes the object in place.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be a number in [0, 1), got {p!r}")
    if _is_config(config_or_model):
        config, model = config_or_model, None
    elif _is_config(getattr(config_or_model, "config", None)) and hasattr(config_or_model, "named_modules"):
        config, model = config_or_model.config, config_or_model
    else:
        raise TypeError(
            "set_dropout expects a transformers PretrainedConfig or a model with a .config, "
            f"got {type(config_or_model).__name__}"
        )
    sites = _config_dropout_keys(config)
    if model is not None:
        sites += [(owner, attr, "module:" + name) for owner, attr, name in _module_dropout_sites(model)]
    if not sites and not allow_missing:
        raise ValueError(
            f"{type(config).__name__} has no dropout-like attribute (names ending in 'dropout', "
            "'pdrop', 'dropout_prob' or 'dropout_rate'); this architecture cannot take a "
            "dropout preset. Set dropout through the model's own code instead."
        )
    for owner, attr, _ in sites:
        setattr(owner, attr, float(p))
    return [name for _, _, name in sites]


def apply_preset(
    preset: str | RegularizationPreset,
    training_args_kwargs: Mapping[str, Any],
    config_or_model: Any,
) -> PresetApplication:
    """Apply a regularization preset to TrainingArguments kwargs and a model config.

    Args:
        preset: a name in :data:`PRESETS` or a :class:`RegularizationPreset`.
        training_args_kwargs: keyword arguments you will pass to ``TrainingArguments``;
            not modified. If it already sets ``weight_decay`` or
            ``label_smoothing_factor`` to a different value, this raises instead of
            silently overriding your setting.
        config_or_model: the model config (preferred: apply before building the model)
            or a built model; changed in place, see :func:`set_dropout`.

    Example::

        kwargs, config, _ = apply_preset("weight_decay", {"output_dir": "out", "learning_rate": 1e-3}, config)
        model = GPT2LMHeadModel(config)
        trainer = Trainer(model=model, args=TrainingArguments(**kwargs), ...)
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown regularization preset {preset!r}; choose one of {sorted(PRESETS)} "
                             "or pass a RegularizationPreset")
        preset = PRESETS[preset]
    elif not isinstance(preset, RegularizationPreset):
        raise TypeError(f"preset must be a name or a RegularizationPreset, got {type(preset).__name__}")

    kwargs = dict(training_args_kwargs)
    for key, value in (("weight_decay", preset.weight_decay), ("label_smoothing_factor", preset.label_smoothing)):
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"training_args_kwargs sets {key}={kwargs[key]!r} but preset {preset.name!r} sets {value!r}; "
                "remove it from the kwargs or use a custom RegularizationPreset"
            )
        kwargs[key] = value
    keys = set_dropout(config_or_model, preset.dropout, allow_missing=preset.dropout == 0.0)
    return PresetApplication(kwargs, config_or_model, keys)
