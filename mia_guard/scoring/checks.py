"""Checks around the scoring pass whose messages name the cause, not the symptom.

* :func:`scorable_model`: the module to call below ``torch.compile`` and DDP /
  DataParallel wrappers (a compiled wrapper hides the Hugging Face interface, and
  recompiles for every batch shape).
* :func:`check_token_ids`: every canary token id is below the model's vocabulary size,
  checked before any forward pass (on a GPU an out-of-range id is a device-side assert
  that leaves the CUDA context unusable; on a CPU a bare ``IndexError``).
* :func:`check_logits`: the model returned logits ``[batch, tokens, vocab]`` covering
  the batch's token ids.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..canaries.encoding import EncodedCanaries

#: Characters of a canary's text quoted in an error.
QUOTE_CHARS = 60


def scorable_model(model: Any) -> Any:
    """``model`` below ``torch.compile`` (``_orig_mod``), DDP and DataParallel wrappers."""
    for _ in range(16):
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model
    raise ValueError("could not unwrap the model: more than 16 nested torch.compile / DDP wrappers")


def known_vocab_size(model: Any) -> int | None:
    """Rows of the model's input embedding (else ``config.vocab_size``); ``None`` when unknown."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if callable(get_embeddings):
        try:
            embeddings = get_embeddings()
        except (NotImplementedError, AttributeError):
            embeddings = None
        if isinstance(embeddings, torch.nn.Embedding):
            return int(embeddings.num_embeddings)
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) and size > 0 else None


def check_token_ids(model: Any, encoded: EncodedCanaries, texts: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming the first canary with a token id the model has no embedding for."""
    vocab = known_vocab_size(model)
    if vocab is None:
        return
    for index, ids in enumerate(encoded.input_ids):
        if ids and max(ids) >= vocab:
            raise ValueError(_out_of_vocab(index, ids, vocab, texts))


def check_logits(logits: Any, ids: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``logits`` is ``[batch, tokens, vocab]`` for ``ids [batch, tokens]``, and
    ``ValueError`` when the vocabulary dimension is smaller than a token id of the batch."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(ids.shape):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(
            f"the model must return logits of shape [batch, tokens, vocab] = [{ids.shape[0]}, {ids.shape[1]}, V] "
            f"(or an object with .logits) for input_ids of shape {tuple(ids.shape)}; got {shape}. Pass the causal "
            "LM itself (e.g. AutoModelForCausalLM), or a callable f(input_ids, attention_mask) -> logits"
        )
    vocab = int(logits.shape[-1])
    if int(ids.max()) >= vocab:
        row = int((ids.max(dim=1).values >= vocab).nonzero()[0, 0])
        raise ValueError(_out_of_vocab(None, ids[row].tolist(), vocab, None))


def _out_of_vocab(index: int | None, ids: Sequence[int], vocab: int, texts: Sequence[str] | None) -> str:
    position = next(p for p, t in enumerate(ids) if t >= vocab)
    which = f"canary {index}" if index is not None else f"a canary ({ids[:8]}...)"
    quoted = ""
    if index is not None and texts is not None and texts[index] is not None:
        text = texts[index]
        quoted = f" ({text[:QUOTE_CHARS]!r}{'...' if len(text) > QUOTE_CHARS else ''})"
    return (
        f"{which}{quoted} has token id {ids[position]} at position {position}, but the model's vocabulary "
        f"has {vocab} tokens (ids 0..{vocab - 1}); tokenize the canaries with the model's own tokenizer, or resize "
        "the model's embeddings after adding tokens (model.resize_token_embeddings(len(tokenizer)))"
    )
