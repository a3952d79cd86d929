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

from .canary_set import Canary, CanarySet


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
            token_ids, start, end = _encode_templated(canary, tokenizer)
        else:
            token_ids, offset, n_text = _encode_text(canary.text, tokenizer)
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


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _encode_text(text: str, tokenizer: Any) -> tuple[list[int], int, int]:
    """Full ids (with special tokens), offset of the text's first token, number of text tokens."""
    full = list(tokenizer(text)["input_ids"])
    plain = _plain_ids(tokenizer, text)
    for offset in range(len(full) - len(plain) + 1):
        if full[offset : offset + len(plain)] == plain:
            return full, offset, len(plain)
    raise ValueError(
        "the tokenizer encodes a canary differently with and without special tokens; "
        "cannot locate the canary's text tokens"
    )


def _encode_templated(canary: Canary, tokenizer: Any) -> tuple[list[int], int, int]:
    """Full ids and the secret's token range, by prefix-consistent tokenization or offsets."""
    full, offset, n_text = _encode_text(canary.text, tokenizer)
    plain = full[offset : offset + n_text]
    first, last = canary.secret_span
    before = _plain_ids(tokenizer, canary.text[:first])
    through = _plain_ids(tokenizer, canary.text[:last])
    if plain[: len(before)] == before and plain[: len(through)] == through and len(through) > len(before):
        return full, offset + len(before), offset + len(through)
    return full, *_secret_range_from_offsets(canary, tokenizer, offset)


def _secret_range_from_offsets(canary: Canary, tokenizer: Any, offset: int) -> tuple[int, int]:
    """Secret token range from a fast tokenizer's character offsets (BPE merges across the boundary)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "the tokenizer merges the secret with its surrounding text and is not a fast tokenizer, so the "
            "secret's tokens cannot be located; use a fast tokenizer or a template whose prefix ends in a space"
        )
    spans = tokenizer(canary.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    first, last = canary.secret_span
    inside = [i for i, (a, b) in enumerate(spans) if a < last and b > first]
    return offset + inside[0], offset + inside[-1] + 1
