"""Goldfish loss: leave a pseudo-random 1/k of the tokens out of the training loss.

Hans et al. (2024), "Be like a Goldfish, Don't Memorize!", drop a token from the
causal-LM loss when a hash of the ``h`` tokens before it falls in a 1/k bucket.
Because the decision depends only on that local context, a passage that occurs many
times in the data loses the *same* tokens every time, so the model never sees a
gradient for them and cannot learn the passage verbatim, while ``(k-1)/k`` of the
tokens still train the model.

Conventions in this module
--------------------------
- Masks are bool tensors aligned with ``input_ids`` (unshifted, like HF ``labels``):
  position ``t`` is the loss on predicting token ``t`` from tokens ``< t``.
  ``True`` = supervised (kept in the loss), ``False`` = dropped.
- The context of position ``t`` is the ``h`` tokens ``t-h .. t-1``. The token at
  ``t`` itself is not part of its context (as in the paper's ``f(x_{t-h}, …, x_{t-1})``).
- **Positions with fewer than h preceding tokens** (the start of every sequence)
  are hashed like the others, with the missing tokens replaced by a sentinel that no
  token id can take. So a text that starts a training example always drops the same
  tokens, and the drop rate is 1/k there too. (The authors' reference code instead
  never drops those positions; with short canaries that would leave their first
  ``h`` tokens fully supervised.) With an ``attention_mask``, positions where it is
  0 count as missing, so left padding does not change the mask of the real tokens.
- Position 0 of a sequence is never a prediction target in a causal LM (the shift
  drops it); :func:`goldfish_mask` reports what goldfish does there, and
  :func:`goldfish_supervised_mask` (for audits) reports ``False``.

The hash is a chained 32-bit integer mix (xor-shift / multiply), keyed by ``key``,
computed with vectorised int64 tensor operations (one pass per context offset,
never per token), so it runs on any device and gives the same bits on CPU and GPU.
A position is dropped when ``hash % k == 0``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # odd multiplier < 2**27: products of 32-bit values stay inside int64
_SENTINEL = -1  # stands for "no token here" (before the sequence start, or padding)


def _check_params(k: int, h: int, key: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (1/k of the tokens are dropped), got {k!r}")
    if isinstance(h, bool) or not isinstance(h, int) or h < 1:
        raise ValueError(f"h (context width in tokens) must be an integer >= 1, got {h!r}")
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"key must be an integer, got {key!r}")


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Avalanche a tensor of non-negative int64 values below 2**32; stays below 2**32."""
    x = x ^ (x >> 16)
    x = (x * _MULT) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MULT) & _MASK32
    return x ^ (x >> 16)


def _context_hash(input_ids: torch.Tensor, h: int, key: int, present: torch.Tensor | None) -> torch.Tensor:
    """int64 ``[B, T]`` hash of the ``h`` tokens before each position (32-bit values)."""
    codes = input_ids.long() & _MASK32
    if present is not None:
        codes = torch.where(present, codes, torch.full_like(codes, _SENTINEL))
    # Shift by one: the sentinel becomes 0, token ids (mod 2**32) 1 .. 2**32 - 1 (id 2**32 - 1 would wrap to 0).
    codes = (codes + 1) & _MASK32
    batch, length = codes.shape
    padded = torch.cat([codes.new_zeros(batch, h), codes], dim=1)  # zeros = sentinel
    state = torch.full((batch, length), _mix32(torch.tensor(key & _MASK32)).item(), dtype=torch.long,
                       device=codes.device)
    for offset in range(h):
        # Context token t-h+offset of position t sits at padded[:, t + offset].
        window_token = padded[:, offset:offset + length]
        state = _mix32(state ^ _mix32(window_token ^ ((offset * 0x9E3779B1) & _MASK32)))
    return state


def goldfish_mask(
    input_ids: torch.Tensor,
    k: int = 4,
    h: int = 13,
    key: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool ``[B, T]`` goldfish mask of ``input_ids`` (``[B, T]`` integer tensor).

    ``True`` = the token at that position stays in the loss; ``False`` = goldfish drops
    it (about 1/k of the positions). The value at position ``t`` depends only on
    ``key`` and the ``h`` tokens before ``t`` (missing tokens at the sequence start and
    positions where ``attention_mask`` is 0 count as a fixed sentinel). Padding
    positions are not treated specially here: combine with ``attention_mask`` yourself.
    """
    _check_params(k, h, key)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a 2-D [batch, seq_len] tensor of token ids; "
                         "use goldfish_supervised_mask for a single sequence")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    present = None
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from "
                             f"input_ids shape {tuple(input_ids.shape)}")
        present = attention_mask.to(device=input_ids.device).bool()
    return _context_hash(input_ids, h, key, present) % k != 0


def goldfish_supervised_mask(
    token_ids: Sequence[int] | torch.Tensor,
    k: int = 4,
    h: int = 13,
    key: int = 0,
    prefix_ids: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool ``[T]``: which of a sequence's tokens received a training loss under goldfish.

    For audits: pass a canary's token ids (exactly as inserted into the training data)
    to learn which positions were supervised (``True``) and which goldfish dropped
    (``False``), e.g. to report attack statistics on each group separately.

    Args:
        token_ids: the canary's ``T`` token ids (1-D list, tuple or tensor).
        k, h, key: the goldfish parameters used in training.
        prefix_ids: tokens that preceded the canary *in its training example* (e.g. a
            BOS token the tokenizer adds, or the text before it if the canary was
            inserted inside a document). ``None`` = the canary started its example.
            Positions ``>= h`` are unaffected by this; earlier ones depend on it.

    Position 0 is ``False`` without a prefix: a causal LM never predicts the first token.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"token_ids must be one sequence (1-D), got shape {tuple(ids.shape)}")
    prefix = torch.as_tensor([] if prefix_ids is None else prefix_ids, dtype=torch.long)
    if prefix.dim() != 1:
        raise ValueError(f"prefix_ids must be 1-D, got shape {tuple(prefix.shape)}")
    full = torch.cat([prefix, ids]).unsqueeze(0)
    supervised = goldfish_mask(full, k=k, h=h, key=key)[0, prefix.numel():].clone()
    if prefix.numel() == 0 and supervised.numel() > 0:
        supervised[0] = False
    return supervised


def goldfish_scored_mask(encoded: Any, k: int = 4, h: int = 13, key: int = 0) -> torch.Tensor:
    """Bool ``[N, T]`` goldfish mask in the layout of :class:`~mia_guard.scoring.token_stats.TokenStats`.

    ``encoded`` is a :class:`~mia_guard.canaries.encoding.EncodedCanaries` (``input_ids`` lists and
    scored ranges ``start``/``end``). Row ``i``, column ``j`` is ``True`` when scored
    token ``start[i] + j`` of canary ``i`` was supervised in training, ``False`` when
    goldfish dropped it or the column is padding; ``T = max(end - start)``, as in the
    statistics that :func:`~mia_guard.scoring.forward.score_tokens` returns. Combine it with
    ``stats.mask`` to compare attack statistics on supervised and dropped tokens.
    Assumes each canary started its training example (see :func:`goldfish_supervised_mask`).
    """
    starts = [int(s) for s in encoded.start]
    ends = [int(e) for e in encoded.end]
    width = max((e - s for s, e in zip(starts, ends)), default=0)
    out = torch.zeros((len(starts), width), dtype=torch.bool)
    for row, (ids, start, end) in enumerate(zip(encoded.input_ids, starts, ends)):
        out[row, : end - start] = goldfish_supervised_mask(ids, k=k, h=h, key=key)[start:end]
    return out


class GoldfishCollator:
    """Causal-LM data collator that applies goldfish loss to the labels.

    A base collator pads the batch and builds ``labels``; then the goldfish-dropped
    positions are set to ``-100``, which the HF ``Trainer`` (and every HF causal-LM
    loss) ignores, so nothing else in the training script changes::

        collator = GoldfishCollator(tokenizer, k=4, h=13, key=0)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)

    Args:
        base: what builds the padded batch:

            - a HF tokenizer: ``DataCollatorForLanguageModeling(tokenizer, mlm=False)``
              (labels = input ids, ``-100`` where the token equals the pad id; padding
              side as the tokenizer says);
            - an ``int`` pad token id: features (mappings with ``input_ids`` and optional
              ``attention_mask``/``labels``, or plain id sequences) are right-padded;
              padding is found by length, so a real token equal to the pad id keeps its
              label, and given labels (e.g. ``-100`` on a prompt) are kept;
            - any other collator callable returning ``input_ids`` and ``labels`` (and
              optionally ``attention_mask``), e.g. an instruction-tuning collator.
        k: drop 1 in ``k`` positions (``k >= 2``).
        h: context width of the hash in tokens.
        key: hash key; different keys drop different positions.
        pad_to_multiple_of: pad the length up to a multiple of this (tokenizer and
            pad-id bases only).

    The goldfish context is read from ``input_ids``, so tokens without a label (a
    prompt) still decide the mask of the tokens after them.
    """

    def __init__(
        self,
        base: Any,
        k: int = 4,
        h: int = 13,
        key: int = 0,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        _check_params(k, h, key)
        self.k, self.h, self.key = k, h, key
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_token_id: int | None = None
        if isinstance(base, bool):
            raise TypeError("base must be a tokenizer, an int pad token id or a collator, got a bool")
        from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

        if isinstance(base, int):
            self.pad_token_id = base
            self._base = self._pad
        elif isinstance(base, PreTrainedTokenizerBase):
            if base.pad_token_id is None:
                raise ValueError("the tokenizer has no pad token; set one (e.g. "
                                 "tokenizer.pad_token = tokenizer.eos_token) or pass a pad token id")
            self.pad_token_id = base.pad_token_id
            self._base = DataCollatorForLanguageModeling(base, mlm=False, pad_to_multiple_of=pad_to_multiple_of)
        elif callable(base):
            if pad_to_multiple_of is not None:
                raise ValueError("pad_to_multiple_of applies to tokenizer or pad-id bases; "
                                 "configure padding on your own collator instead")
            self._base = base
        else:
            raise TypeError(f"base must be a tokenizer, an int pad token id or a collator, got {type(base).__name__}")

    def __call__(self, features: list[Any]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("GoldfishCollator got an empty batch")
        batch = self._base(features)
        if "labels" not in batch or "input_ids" not in batch:
            raise ValueError("the base collator must return 'input_ids' and 'labels' "
                             f"(got keys {sorted(batch.keys())})")
        keep = goldfish_mask(batch["input_ids"], self.k, self.h, self.key, batch.get("attention_mask"))
        batch["labels"] = batch["labels"].masked_fill(~keep, -100)
        return batch

    def _pad(self, features: list[Any]) -> dict[str, torch.Tensor]:
        rows = [f if isinstance(f, Mapping) else {"input_ids": f} for f in features]
        ids = [torch.as_tensor(r["input_ids"], dtype=torch.long).reshape(-1) for r in rows]
        length = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(ids), length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), length), dtype=torch.long)
        labels = torch.full((len(ids), length), -100, dtype=torch.long)
        for i, (row, seq) in enumerate(zip(rows, ids)):
            n = len(seq)
            input_ids[i, :n] = seq
            attention[i, :n] = torch.as_tensor(row.get("attention_mask", [1] * n), dtype=torch.long).reshape(-1)
            labels[i, :n] = torch.as_tensor(row.get("labels", seq), dtype=torch.long).reshape(-1)
        labels = labels.masked_fill(attention == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def __repr__(self) -> str:
        return f"GoldfishCollator(k={self.k}, h={self.h}, key={self.key})"
