"""Utility of a trained demo model: perplexity on held-out stdlib chunks, with an interval.

The held-out chunks come from the same seeded stream of stdlib source as the training
corpus (:func:`~mia_guard.experiments.demo_assets.stdlib_corpus`), taken after its first
``corpus_chunks`` chunks, so they are text the model never trained on (chunks whose text
also occurs in the training data are dropped).

Perplexity is per token (one token = one byte of UTF-8 text, plus the EOS the tokenizer
appends): ``exp`` of the mean over chunks of each chunk's mean next-token NLL. Its
interval is the Student-t interval of that mean over chunks, mapped through ``exp``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..stats.estimate import Estimate, mean_with_ci
from .demo import CHUNK_CHARS, MAX_LENGTH
from .demo_assets import CausalLMCollator, stdlib_corpus, tokenize


def held_out_rows(
    tokenizer: Any, corpus_chunks: int, n_chunks: int, seed: int, training_texts: Sequence[str]
) -> list[dict]:
    """Tokenized rows of up to ``n_chunks`` stdlib chunks after the training corpus (none of them a training text)."""
    if n_chunks < 2:
        raise ValueError(f"held-out perplexity needs at least 2 chunks for an interval, got {n_chunks}")
    chunks = stdlib_corpus(
        max_chars=(corpus_chunks + n_chunks) * CHUNK_CHARS, chunk_chars=CHUNK_CHARS, seed=seed
    )[corpus_chunks:]
    seen = set(training_texts)
    fresh = [c for c in chunks if c not in seen]
    if len(fresh) < 2:
        raise ValueError(
            f"only {len(fresh)} held-out stdlib chunks remain after the {corpus_chunks} training chunks; "
            "use fewer corpus chunks"
        )
    return tokenize(fresh, tokenizer, MAX_LENGTH)


def chunk_nll(model: Any, rows: Sequence[dict], batch_size: int = 32) -> np.ndarray:
    """Mean next-token NLL (nats) of each row under ``model``, float64 ``[len(rows)]``.

    ``model`` is called as ``model(input_ids=..., attention_mask=...)`` and must return
    ``.logits [B, T, V]`` (a Hugging Face causal LM, or a
    :class:`~mia_guard.defenses.PerturbedOutputModel`, whose logits are log-probabilities;
    ``log_softmax`` leaves those unchanged). Runs in eval mode without gradients and
    restores every module's mode.
    """
    collate = CausalLMCollator(max_length=MAX_LENGTH)
    device = next(model.parameters()).device
    modules = list(model.modules())
    modes = [m.training for m in modules]
    out: list[np.ndarray] = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collate(rows[start : start + batch_size])
                ids = batch["input_ids"].to(device)
                attention = batch["attention_mask"].to(device)
                logits = model(input_ids=ids, attention_mask=attention).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                scored = attention[:, 1:].bool()
                per_row = (nll * scored).sum(dim=1) / scored.sum(dim=1).clamp(min=1)
                out.append(per_row.double().cpu().numpy())
    finally:
        for module, mode in zip(modules, modes):
            module.training = mode
    return np.concatenate(out)


def perplexity(nll_per_chunk: np.ndarray, confidence: float = 0.95) -> Estimate:
    """``exp`` of the mean chunk NLL with the t-interval of that mean, mapped through ``exp``."""
    mean = mean_with_ci(np.asarray(nll_per_chunk, dtype=np.float64), confidence)
    return Estimate(math.exp(mean.value), math.exp(mean.low), math.exp(mean.high), confidence, mean.note)
