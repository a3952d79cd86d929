"""Offline building blocks for the demo, examples and tests: nothing is downloaded.

- :func:`byte_tokenizer`: a byte-level tokenizer (ByT5's, 259 ids: pad 0, eos 1, unk 2, bytes 3..258).
- :func:`tiny_gpt2`: a small GPT-2 built from a config.
- :func:`stdlib_corpus`: text chunks of the Python standard library's own source files.
- :class:`CausalLMCollator`: pads token rows and sets ``labels`` (padding ignored).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

BYTE_VOCAB_SIZE = 259
PAD_ID = 0
EOS_ID = 1


def byte_tokenizer() -> Any:
    """ByT5's byte-level tokenizer without sentinel ids (appends EOS; works offline)."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer(extra_ids=0)


def tiny_gpt2(
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 128,
    dropout: float = 0.0,
    seed: int = 0,
) -> Any:
    """A GPT-2 LM over byte tokens (about 125k parameters at the defaults), seeded init."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=BYTE_VOCAB_SIZE,
        n_positions=n_positions,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def stdlib_corpus(max_chars: int = 2_000_000, chunk_chars: int = 120, seed: int = 0) -> list[str]:
    """Chunks of ``chunk_chars`` characters of the stdlib's ``.py`` sources, up to ``max_chars`` in all.

    Files are taken in a seeded random order of the sorted file list, so the corpus is
    the same on every machine with the same Python version.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise RuntimeError(f"no Python sources found under {root}; the demo corpus needs the stdlib sources")
    order = np.random.default_rng(seed).permutation(len(files))
    chunks: list[str] = []
    total = 0
    for index in order:
        text = files[index].read_text(encoding="utf-8", errors="replace")
        for start in range(0, len(text) - chunk_chars + 1, chunk_chars):
            chunks.append(text[start : start + chunk_chars])
            total += chunk_chars
            if total >= max_chars:
                return chunks
    return chunks


class CausalLMCollator:
    """Pads rows of ``input_ids`` to the longest in the batch; ``labels`` = ids with padding -100.

    Rows are dicts with ``input_ids`` (lists or 1-D tensors). Padding is on the right
    with ``pad_id``; ``attention_mask`` marks real tokens.
    """

    def __init__(self, pad_id: int = PAD_ID, max_length: int | None = None) -> None:
        self.pad_id = pad_id
        self.max_length = max_length

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        seqs = [list(map(int, r["input_ids"]))[: self.max_length] for r in rows]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[i, : len(seq)] = 1
        labels = ids.masked_fill(attention == 0, -100)
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[dict]:
    """``[{"input_ids": [...]}]`` rows, truncated to ``max_length`` tokens."""
    return [{"input_ids": tokenizer(t)["input_ids"][:max_length]} for t in texts]
