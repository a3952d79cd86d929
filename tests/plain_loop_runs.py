"""A small plain-PyTorch training loop that drives an AuditLoop (tiny byte GPT-2, CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from trainer_runs import training_rows

from mia_guard import CanarySet
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer


def train(
    model: Any,
    canary_set: CanarySet,
    steps: int,
    audits: Any = None,
    *,
    seed: int = 0,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
) -> int:
    """AdamW steps 1..``steps`` over stdlib chunks with ``canary_set`` inserted; calls
    ``audits.start`` before and ``audits.step`` after every step (when given), stopping
    when it says so. Returns the last step done."""
    rows = training_rows(canary_set, byte_tokenizer())
    order = np.random.default_rng(seed).permutation(len(rows)).tolist() * (steps * batch_size // len(rows) + 1)
    collate = CausalLMCollator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    if audits is not None and audits.start(model):
        return 0
    model.train()
    step = 0
    for step in range(1, steps + 1):
        batch = collate([rows[i] for i in order[(step - 1) * batch_size : step * batch_size]])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if audits is not None and audits.step(model, step):
            break
    return step
