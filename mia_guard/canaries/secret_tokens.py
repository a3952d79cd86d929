"""Where a canary's tokens are: its text's token ids and the token range of its secret.

Shared by :mod:`mia_guard.canaries.encoding` (scoring ranges) and
:mod:`mia_guard.canaries.token_alignment` (round-trip checks of generated secrets); it
imports nothing from the package, so neither depends on the other.
"""

from __future__ import annotations

from typing import Any


def plain_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_text(text: str, tokenizer: Any) -> tuple[list[int], int, int]:
    """Full ids (with special tokens), offset of the text's first token, number of text tokens."""
    full = list(tokenizer(text)["input_ids"])
    plain = plain_ids(tokenizer, text)
    for offset in range(len(full) - len(plain) + 1):
        if full[offset : offset + len(plain)] == plain:
            return full, offset, len(plain)
    raise ValueError(
        "the tokenizer encodes a canary differently with and without special tokens; "
        "cannot locate the canary's text tokens"
    )


def encode_with_secret(text: str, secret_span: tuple[int, int], tokenizer: Any) -> tuple[list[int], int, int]:
    """Full ids of ``text`` and the token range ``[start, end)`` covering the characters ``secret_span``,
    by prefix-consistent tokenization or, where BPE merges across the boundary, character offsets."""
    full, offset, n_text = encode_text(text, tokenizer)
    plain = full[offset : offset + n_text]
    first, last = secret_span
    before = plain_ids(tokenizer, text[:first])
    through = plain_ids(tokenizer, text[:last])
    if plain[: len(before)] == before and plain[: len(through)] == through and len(through) > len(before):
        return full, offset + len(before), offset + len(through)
    return full, *_secret_range_from_offsets(text, secret_span, tokenizer, offset)


def _secret_range_from_offsets(text: str, secret_span: tuple[int, int], tokenizer: Any, offset: int) -> tuple[int, int]:
    """Secret token range from a fast tokenizer's character offsets (BPE merges across the boundary)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "the tokenizer merges the secret with its surrounding text and is not a fast tokenizer, so the "
            "secret's tokens cannot be located; use a fast tokenizer or a template whose prefix ends in a space"
        )
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    first, last = secret_span
    inside = [i for i, (a, b) in enumerate(spans) if a < last and b > first]
    return offset + inside[0], offset + inside[-1] + 1
