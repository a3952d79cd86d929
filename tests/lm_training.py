"""A minimal plain-PyTorch training loop for the tests' tiny byte-level GPT-2s."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mia_guard.experiments.demo_assets import CausalLMCollator, tokenize


def train_lm(
    model: Any,
    texts: Sequence[str],
    tokenizer: Any,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    max_length: int = 128,
    seed: int = 0,
) -> Any:
    """Train ``model`` for ``steps`` AdamW steps on shuffled ``texts`` (epochs repeat); returns it in eval mode."""
    rows = tokenize(texts, tokenizer, max_length)
    collate = CausalLMCollator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order.extend(rng.permutation(len(rows)).tolist())
        batch = collate([rows[i] for i in order[:batch_size]])
        del order[:batch_size]
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval()
