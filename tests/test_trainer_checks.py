"""A Trainer whose batches carry no labels is told so before the step-0 audit, with the fix."""

from __future__ import annotations

import logging

import pytest
from trainer_runs import canaries, training_rows

from mia_guard.callbacks import MIAAuditCallback
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


def _trainer(tmp_path, callback, trainer_class=None, **kwargs):
    from transformers import Trainer, TrainingArguments

    tokenizer = byte_tokenizer()
    return (trainer_class or Trainer)(
        model=tiny_gpt2(n_layer=1, n_embd=32),
        args=TrainingArguments(output_dir=str(tmp_path), max_steps=2, report_to="none", use_cpu=True,
                               save_strategy="no", disable_tqdm=True),
        train_dataset=training_rows(callback.canaries, tokenizer, n_chunks=16),
        processing_class=tokenizer,  # no data_collator: the Trainer pads, and adds no labels
        callbacks=[callback],
        **kwargs,
    )


def test_no_labels_is_an_error_before_the_first_audit(tmp_path):
    callback = MIAAuditCallback(canaries(), output_dir=tmp_path / "mia", tensorboard=False, progress=False,
                                attacks=["loss"], fprs=[0.1])
    with pytest.raises(ValueError, match=r"no labels.*DataCollatorForLanguageModeling\(tokenizer, mlm=False\)"):
        _trainer(tmp_path, callback).train()
    assert callback.history is None or len(callback.history) == 0
    assert not (tmp_path / "mia" / "history.json").exists()


def test_a_custom_loss_only_gets_a_warning(tmp_path, caplog):
    from transformers import Trainer

    class ShiftedLossTrainer(Trainer):  # computes the loss from input_ids itself
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs, labels=inputs["input_ids"])
            return (outputs.loss, outputs) if return_outputs else outputs.loss

    callback = MIAAuditCallback(canaries(), every_n_steps=None, output_dir=tmp_path / "mia", tensorboard=False,
                                progress=False, attacks=["loss"], fprs=[0.1], extraction=None)
    with caplog.at_level(logging.WARNING, logger="mia_guard.callbacks.trainer_checks"):
        _trainer(tmp_path, callback, trainer_class=ShiftedLossTrainer).train()
    assert callback.history.steps == [0, 2]
    assert any("unless your loss needs no labels" in r.message for r in caplog.records)
