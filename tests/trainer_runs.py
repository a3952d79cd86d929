"""Tiny real Hugging Face Trainer runs for the callback and TensorBoard tests (CPU, seconds each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from mia_guard import CanarySet
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize

torch.set_num_threads(1)


def canaries(n: int = 32, seed: int = 0) -> CanarySet:
    return CanarySet.generate(n, "code_credential", seed=seed)


def training_rows(canary_set: CanarySet, tokenizer: Any, n_chunks: int = 64, repetitions: int = 2) -> list[dict]:
    texts = canary_set.insert_into(stdlib_corpus(max_chars=n_chunks * 120), repetitions=repetitions)
    return tokenize(texts, tokenizer, 128)


def make_trainer(
    output_dir: Path,
    callbacks: Sequence[Any] = (),
    *,
    model: Any = None,
    canary_set: CanarySet | None = None,
    max_steps: int = 7,
    dropout: float = 0.1,
    seed: int = 0,
    learning_rate: float = 1e-3,
    eval_steps: int | None = None,
    **arguments: Any,
):
    """A Trainer over stdlib chunks with ``canary_set`` inserted, training a 1-layer byte GPT-2."""
    from transformers import Trainer, TrainingArguments

    tokenizer = byte_tokenizer()
    rows = training_rows(canary_set or canaries(), tokenizer)
    options = dict(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=learning_rate,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1000,
        disable_tqdm=True,
        seed=seed,
        dataloader_num_workers=0,
    )
    if eval_steps is not None:
        options.update(eval_strategy="steps", eval_steps=eval_steps, per_device_eval_batch_size=8)
    options.update(arguments)
    return Trainer(
        model=model if model is not None else tiny_gpt2(n_layer=1, n_embd=32, dropout=dropout, seed=seed),
        args=TrainingArguments(**options),
        train_dataset=rows,
        eval_dataset=rows[:16] if eval_steps is not None else None,
        data_collator=CausalLMCollator(),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
