"""Checks of a ``Trainer`` set-up that would otherwise fail after the step-0 audit.

A causal LM returns a loss only when its batch holds labels. A Trainer given a tokenizer
but no data collator pads batches with ``DataCollatorWithPadding``, which adds none, so
the first training step fails with "The model did not return a loss from the inputs"
(after the callback's step-0 audit, which makes the audit look guilty).
:func:`check_batches_have_labels` collates the first training example before that audit
(with every RNG restored, so training is unchanged) and says what to do.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..scoring.guards import preserved_rng

logger = logging.getLogger(__name__)

FIX = (
    "give the Trainer a collator that adds labels, e.g. "
    "data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), or labels in the dataset"
)


def check_batches_have_labels(trainer: Any, train_dataloader: Any) -> None:
    """Raise (or warn) when the Trainer's training batches carry no labels.

    An error when the failure is certain: the Trainer computes the loss the standard way
    (no ``compute_loss`` override, no ``compute_loss_func``) and the model is a causal LM
    (a class of transformers' causal-LM auto mapping or a PEFT ``...ForCausalLM``, which
    compute a loss only from labels). A warning when it is
    likely but a custom loss might not need labels. Nothing when the first example
    cannot be collated here (an iterable dataset, a collator that fails on one row).

    Raises:
        ValueError: the first training step would fail without a loss.
    """
    if trainer is None or train_dataloader is None:
        return
    batch = _first_batch(train_dataloader)
    if not isinstance(batch, Mapping):
        return
    label_names = list(getattr(trainer, "label_names", None) or ["labels"])
    if any(name in batch for name in label_names):
        return
    collator = type(getattr(train_dataloader, "collate_fn", None)).__name__
    message = (
        f"the Trainer's training batches have no {' or '.join(label_names)} (keys: {sorted(batch)}; collator "
        f"{collator}), so the model computes no loss and the first training step fails; {FIX}"
    )
    from transformers import Trainer

    standard_loss = type(trainer).compute_loss is Trainer.compute_loss and getattr(
        trainer, "compute_loss_func", None) is None
    if standard_loss and _is_causal_lm(getattr(trainer, "model", None)):
        raise ValueError(f"MIAAuditCallback: {message}")
    logger.warning("mia_guard: %s (unless your loss needs no labels)", message)


def _is_causal_lm(model: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    return name.endswith("ForCausalLM") or name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _first_batch(train_dataloader: Any) -> Any:
    dataset = getattr(train_dataloader, "dataset", None)
    collate = getattr(train_dataloader, "collate_fn", None)
    if dataset is None or collate is None or not hasattr(dataset, "__getitem__"):
        return None
    try:
        with preserved_rng():
            return collate([dataset[0]])
    except Exception:  # noqa: BLE001 - a check must not break a set-up it cannot read
        return None
