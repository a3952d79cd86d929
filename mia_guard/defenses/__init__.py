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

from .._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "GoldfishCollator": "mia_guard.defenses.goldfish",
    "goldfish_mask": "mia_guard.defenses.goldfish",
    "goldfish_supervised_mask": "mia_guard.defenses.goldfish",
    "goldfish_scored_mask": "mia_guard.defenses.goldfish",
    "PRESETS": "mia_guard.defenses.regularization",
    "RegularizationPreset": "mia_guard.defenses.regularization",
    "PresetApplication": "mia_guard.defenses.regularization",
    "apply_preset": "mia_guard.defenses.regularization",
    "set_dropout": "mia_guard.defenses.regularization",
    "PerturbedOutputModel": "mia_guard.defenses.output",
    "DedupResult": "mia_guard.defenses.dedup",
    "deduplicate": "mia_guard.defenses.dedup",
    "DPConfig": "mia_guard.defenses.dp",
    "DPTrainer": "mia_guard.defenses.dp",
    "opacus_hooks_disabled": "mia_guard.defenses.dp",
    "unwrap_dp_model": "mia_guard.defenses.dp",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
