"""Defenses against memorization that plug into a training script.

=====================  ===========================================  ==========================
defense                what it changes                              module
=====================  ===========================================  ==========================
goldfish loss          the labels (a data collator)                 :mod:`.goldfish`
regularization         TrainingArguments and the model config       :mod:`.regularization`
output perturbation    what a released model's API returns          :mod:`.output`
deduplication          the training data                            :mod:`.dedup`
DP-SGD (Opacus)        the optimizer step (clip, noise, account)    :mod:`.dp`
=====================  ===========================================  ==========================

Names are imported on first use, so ``import mia_guard.defenses`` loads neither torch
nor transformers; only the DP names import Opacus. See docs/defenses.md for parameters,
presets and Trainer examples.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS = {
    "GoldfishCollator": "goldfish",
    "goldfish_mask": "goldfish",
    "goldfish_supervised_mask": "goldfish",
    "goldfish_scored_mask": "goldfish",
    "PRESETS": "regularization",
    "RegularizationPreset": "regularization",
    "PresetApplication": "regularization",
    "apply_preset": "regularization",
    "set_dropout": "regularization",
    "PerturbedOutputModel": "output",
    "DedupResult": "dedup",
    "deduplicate": "dedup",
    "DPConfig": "dp",
    "DPTrainer": "dp",
    "opacus_hooks_disabled": "dp",
    "unwrap_dp_model": "dp",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
