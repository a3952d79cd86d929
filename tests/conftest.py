"""Shared fixtures: a tiny byte-level GPT-2 trained once per test session (shared by xdist workers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock
from lm_training import train_lm

from mia_guard import CanarySet
from mia_guard.experiments.demo_assets import byte_tokenizer, stdlib_corpus, tiny_gpt2

torch.set_num_threads(1)

#: The trained fixture: 128 credential canaries, members inserted 16 times into 1500 stdlib chunks, 300 steps.
REPETITIONS = 16
STEPS = 300


@dataclass
class TrainedLM:
    model: Any
    tokenizer: Any
    canaries: CanarySet
    untrained: Any  # the same architecture and initialisation, before training
    directory: Path  # save_pretrained directory of the trained model (+ canaries.json)


def _train_and_save(directory: Path) -> None:
    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(128, "code_credential", seed=0)
    data = canaries.insert_into(stdlib_corpus(max_chars=1500 * 120), repetitions=REPETITIONS)
    model = train_lm(tiny_gpt2(seed=0), data, tokenizer, steps=STEPS)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    canaries.save(directory / "canaries.json")
    (directory / "done").write_text("ok")


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory) -> TrainedLM:
    """A tiny GPT-2 that memorized its member canaries (loss-attack AUC ~0.98)."""
    from transformers import GPT2LMHeadModel

    shared = tmp_path_factory.getbasetemp().parent  # common to all xdist workers of this run
    directory = shared / "trained_lm"
    with FileLock(str(shared / "trained_lm.lock")):
        if not (directory / "done").exists():
            directory.mkdir(exist_ok=True)
            _train_and_save(directory)
    model = GPT2LMHeadModel.from_pretrained(directory).eval()
    return TrainedLM(
        model=model,
        tokenizer=byte_tokenizer(),
        canaries=CanarySet.load(directory / "canaries.json"),
        untrained=tiny_gpt2(seed=0).eval(),
        directory=directory,
    )
