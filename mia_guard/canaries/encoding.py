"""Turn canaries into token ids and the token range each canary is scored on.

Scored range ``[start, end)`` (token indices into ``input_ids``): position ``t`` in the
range is scored by ``-log p(x_t | x_<t)``, so ``start >= 1``.

- templated canaries: the secret's tokens;
- text canaries: every text token after the first, or after ``prefix_tokens`` tokens
  (prefix sensitivity: score only the continuation);
- token canaries: every token after the first (or after ``prefix_tokens``).

Special tokens the tokenizer adds (BOS, EOS) are kept in ``input_ids``, so the model
sees the canary as it saw training text, but are never scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .canary_set import CanarySet
from .secret_tokens import encode_text, encode_with_secret


@dataclass(frozen=True)
class EncodedCanaries:
    """Token ids and scored ranges of N canaries.

    Attributes:
        input_ids: N lists of token ids (unpadded).
        start: int ``[N]``, first scored token index (>= 1).
        end: int ``[N]``, one past the last scored token index.
    """

    input_ids: list[list[int]]
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids], dtype=np.int64)

    @property
    def num_scored(self) -> np.ndarray:
        return self.end - self.start

    def prompt_ids(self, index: int) -> list[int]:
        """The tokens before the scored range (what a secret-extraction attack prompts with)."""
        return self.input_ids[index][: self.start[index]]


def encode_canaries(canaries: CanarySet, tokenizer: Any = None, *, prefix_tokens: int = 0) -> EncodedCanaries:
    """Tokenize ``canaries`` and locate their scored tokens.

    Args:
        canaries: the canary set.
        tokenizer: a Hugging Face tokenizer (any callable returning ``{"input_ids": [...]}``);
            not needed for token-only canaries.
        prefix_tokens: for text and token canaries, leave this many leading tokens
            unscored (the model sees them as context).
    """
    if prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be >= 0, got {prefix_tokens}")
    if canaries.kind != "tokens" and tokenizer is None:
        raise ValueError("text canaries need a tokenizer: pass tokenizer=... (the one used in training)")
    canaries.check_tokenizer(tokenizer)
    ids, starts, ends = [], [], []
    for index, canary in enumerate(canaries.canaries):
        if canaries.kind == "tokens":
            token_ids, start, end = list(canary.token_ids), max(1, prefix_tokens), len(canary.token_ids)
        elif canaries.kind == "templated":
            token_ids, start, end = encode_with_secret(canary.text, canary.secret_span, tokenizer)
        else:
            token_ids, offset, n_text = encode_text(canary.text, tokenizer)
            start, end = max(1, offset + prefix_tokens), offset + n_text
        if end <= start:
            raise ValueError(
                f"canary {index} has no scored tokens (scored range [{start}, {end}) of {len(token_ids)} tokens); "
                "canaries need at least one token after their context"
                + (" — lower prefix_tokens" if prefix_tokens else "")
            )
        ids.append(token_ids)
        starts.append(start)
        ends.append(end)
    encoded = EncodedCanaries(ids, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))
    _check_aligned(canaries, encoded)
    return encoded


def _check_aligned(canaries: CanarySet, encoded: EncodedCanaries) -> None:
    """Token-aligned canaries must all score the same number of tokens (``T`` for templated ones)."""
    alignment = canaries.alignment
    if alignment is None:
        return
    counts = encoded.num_scored
    expected = alignment.num_tokens if canaries.kind == "templated" else int(counts[0])
    wrong = np.flatnonzero(counts != expected)
    if len(wrong):
        raise ValueError(
            f"canary {int(wrong[0])} scores {int(counts[wrong[0]])} tokens but these token-aligned canaries "
            f"score {expected} each; the tokenizer does not encode them as when they were built "
            "(regenerate the canaries with this tokenizer)"
        )
