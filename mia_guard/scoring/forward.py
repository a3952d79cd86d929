"""One forward pass over the canaries -> :class:`~mia_guard.scoring.token_stats.TokenStats`.

:func:`score_tokens` runs a causal LM (any Hugging Face ``PreTrainedModel``, or any
callable ``f(input_ids, attention_mask) -> logits [B, T, V]`` / an object with
``.logits``) over the canaries in length-sorted batches and computes, per scored
token, the statistics every attack reads. It never holds a float32 ``[B, T, V]``
log-softmax: statistics are computed over bounded chunks of positions. For Hugging
Face models whose logits are a plain linear head over the final hidden state (checked
numerically on the first row), only the scored positions ever get logits, so the
full ``[B, T, V]`` logits tensor is never materialised at all.

Auditing changes nothing: eval mode is set and every module's previous mode restored,
gradients are off, and the global RNG state (CPU and CUDA) is forked.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..canaries.canary_set import CanarySet
from ..canaries.encoding import EncodedCanaries, encode_canaries
from .checks import check_logits, check_token_ids, scorable_model
from .token_stats import STAT_FIELDS, TokenStats

#: Upper bound on the float32 chunk of log-probabilities held at once (bytes).
CHUNK_BYTES = 32 * 2**20
#: Below this many bytes of float32 logits per batch, chunking saves nothing worth its overhead.
SMALL_LOGITS_BYTES = 8 * 2**20
#: Default upper bound on padded tokens per batch.
BATCH_TOKENS = 16384
MAX_BATCH_SIZE = 64


def score_tokens(
    model: Any,
    canaries: CanarySet | EncodedCanaries,
    tokenizer: Any = None,
    *,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TokenStats:
    """Per-token statistics of every canary under ``model``.

    Args:
        model: a Hugging Face causal LM or a callable returning logits ``[B, T, V]``;
            ``torch.compile``, DDP and DataParallel wrappers are looked through.
        canaries: a CanarySet (tokenized with ``tokenizer``) or pre-encoded canaries.
        tokenizer: needed for text canaries passed as a CanarySet.
        batch_size: canaries per forward pass; default picks one from a token budget.
        chunk_size: positions per log-softmax chunk; default bounds the chunk to
            ``CHUNK_BYTES``. Results do not depend on it (nor on ``batch_size``) beyond 1e-5.
        device: where to run; default is the model's device (CPU for plain callables).
        progress: show a progress bar over batches.

    Returns:
        TokenStats with N rows in the canaries' order.
    """
    model = scorable_model(model)
    encoded = canaries if isinstance(canaries, EncodedCanaries) else encode_canaries(canaries, tokenizer)
    _check_context_length(model, encoded)
    check_token_ids(model, encoded, canaries.texts if isinstance(canaries, CanarySet) else None)
    device = torch.device(device) if device is not None else _model_device(model)
    vocab = _vocab_size(model)
    if batch_size is None:
        batch_size = max(1, min(MAX_BATCH_SIZE, BATCH_TOKENS // int(encoded.lengths.max())))
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")

    width = int(encoded.num_scored.max())
    out = {name: torch.zeros(len(encoded), width) for name in STAT_FIELDS}
    mask = torch.zeros(len(encoded), width, dtype=torch.bool)
    batches = list(_length_sorted_batches(encoded, batch_size))
    with _audit_mode(model, device):
        logits_fn = _LogitsFunction(model, encoded, device)
        for rows in _progress(batches, progress):
            ids, attention = _pad(encoded, rows, device)
            chunks = logits_fn(ids, attention)
            starts, ends = encoded.start[rows], encoded.end[rows]
            # logits at position t-1 score token t; cover every scored token of the batch
            first, last = int(starts.min()) - 1, int(ends.max()) - 1
            step = chunk_size or _default_chunk(len(rows), last - first, vocab)
            for c0 in range(first, last, step):
                c1 = min(c0 + step, last)
                stats = _chunk_statistics(chunks(c0, c1).float(), ids[:, c0 + 1 : c1 + 1])
                _scatter(out, mask, stats, rows, starts, ends, c0, c1)
    return TokenStats(**out, mask=mask)


def _default_chunk(batch: int, span: int, vocab: int) -> int:
    """Positions per chunk. Small problems (the batch's logits over the scored span fit in
    ``SMALL_LOGITS_BYTES``) take one chunk; otherwise at most ``CHUNK_BYTES`` of float32 and
    at most a quarter of the span, so the three chunk-sized temporaries stay below one full
    ``[B, T, V]`` logits tensor."""
    if 4 * batch * span * vocab <= SMALL_LOGITS_BYTES:
        return max(1, span)
    by_bytes = CHUNK_BYTES // (4 * batch * vocab)
    return max(1, min(by_bytes, -(-span // 4)))


# ---------------------------------------------------------------------------- statistics
def _chunk_statistics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics of ``targets [B, C]`` under ``logits [B, C, V]`` (float32), each ``[B, C]``.

    Works on ``d = logits - max(logits)``: the entropy and the variance of log p are
    shift-invariant, and centring at the maximum keeps ``E[d^2] - E[d]^2`` free of
    cancellation for flat distributions. Sums over the vocabulary are row-wise dot
    products (``bmm``), so no ``[B, C, V]`` product is materialised and each row's result
    does not depend on the batch it is in. Seven passes over the chunk in all.
    """
    rows, vocab = logits.shape[0] * logits.shape[1], logits.shape[2]
    d = logits - logits.amax(dim=-1, keepdim=True)  # <= 0, max is 0
    target_d = d.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    e = d.exp()
    total = e.sum(-1)
    log_total = total.log()
    target_logp = target_d - log_total
    log_rest = _log_one_minus_p(d, targets, target_logp)
    mean_d = torch.bmm(e.view(rows, 1, vocab), d.view(rows, vocab, 1)).view_as(total) / total
    d.square_()
    mean_d2 = torch.bmm(e.view(rows, 1, vocab), d.view(rows, vocab, 1)).view_as(total) / total
    return {
        "nll": -target_logp,
        "confidence": target_logp - log_rest,
        "entropy": log_total - mean_d,
        "logp_std": (mean_d2 - mean_d.square()).clamp(min=0).sqrt(),
        "top1": (target_d >= 0).float(),
    }


def _log_one_minus_p(d: torch.Tensor, targets: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    """log(1 - p(target)), ``[B, C]``: log1p(-p) where p < 1/2, else an exact log-sum-exp over
    the other tokens (only for those positions), so it stays finite and exact as p -> 1."""
    out = torch.log1p(-target_logp.exp())
    confident = target_logp > -0.6931471805599453
    if confident.any():
        sub = d[confident].clone()
        sub.scatter_(-1, targets[confident].unsqueeze(-1), float("-inf"))
        out[confident] = torch.logsumexp(sub, dim=-1) - torch.logsumexp(d[confident], dim=-1)
    return out


def _scatter(out, mask, stats, rows, starts, ends, c0: int, c1: int) -> None:
    """Copy chunk columns (logit positions c0..c1-1, i.e. tokens c0+1..c1) into the left-aligned output."""
    tokens = torch.arange(c0 + 1, c1 + 1).unsqueeze(0)  # [1, C] token index of each chunk column
    starts_t, ends_t = torch.as_tensor(starts).unsqueeze(1), torch.as_tensor(ends).unsqueeze(1)
    scored = (tokens >= starts_t) & (tokens < ends_t)  # [B, C]
    batch_index, chunk_col = scored.nonzero(as_tuple=True)
    dest_rows = torch.as_tensor(rows)[batch_index]
    dest_cols = tokens[0, chunk_col] - starts_t[batch_index, 0]
    for name in STAT_FIELDS:
        out[name][dest_rows, dest_cols] = stats[name][batch_index.to(stats[name].device), chunk_col.to(stats[name].device)].cpu()
    mask[dest_rows, dest_cols] = True


# ---------------------------------------------------------------------------- logits
class _LogitsFunction:
    """Maps a padded batch to ``chunks(c0, c1) -> logits [B, c1 - c0, V]`` (model dtype).

    For Hugging Face models with a plain linear output head, runs the base model once and
    applies the head per chunk; otherwise runs the full model and slices its logits.
    """

    def __init__(self, model: Any, encoded: EncodedCanaries, device: torch.device) -> None:
        self.model = model
        self.head = _verified_head(model, encoded, device)

    def __call__(self, ids: torch.Tensor, attention: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        if self.head is not None:
            base, head = self.head
            hidden = base(input_ids=ids, attention_mask=attention).last_hidden_state
            return lambda c0, c1: head(hidden[:, c0:c1])
        logits = _call_for_logits(self.model, ids, attention)
        return lambda c0, c1: logits[:, c0:c1]


def _call_for_logits(model: Any, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    output = model(input_ids=ids, attention_mask=attention) if _is_hf_model(model) else model(ids, attention)
    logits = output.logits if hasattr(output, "logits") else output
    check_logits(logits, ids)
    return logits


def _verified_head(model: Any, encoded: EncodedCanaries, device: torch.device):
    """``(base_model, head)`` when ``head(base(x))`` reproduces the model's logits, else ``None``."""
    if not _is_hf_model(model):
        return None
    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return None
    ids = torch.tensor([encoded.input_ids[0]], device=device)
    attention = torch.ones_like(ids)
    try:
        expected = model(input_ids=ids, attention_mask=attention).logits
        hidden = base(input_ids=ids, attention_mask=attention).last_hidden_state
        got = head(hidden)
    except (TypeError, AttributeError, RuntimeError):
        return None
    if got.shape != expected.shape or not torch.allclose(got.float(), expected.float(), rtol=1e-4, atol=1e-4):
        return None
    return base, head


# ---------------------------------------------------------------------------- helpers
def _length_sorted_batches(encoded: EncodedCanaries, batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort(encoded.lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def _pad(encoded: EncodedCanaries, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` ``[B, T]`` (pad id 0, masked out)."""
    length = int(encoded.lengths[rows].max())
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        seq = encoded.input_ids[row]
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[b, : len(seq)] = 1
    return ids.to(device), attention.to(device)


def _is_hf_model(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(model, PreTrainedModel)


def _model_device(model: Any) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for param in model.parameters():
            return param.device
    return torch.device("cpu")


def _vocab_size(model: Any) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "vocab_size", None) or 50257)


def _context_limit(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_context_length(model: Any, encoded: EncodedCanaries) -> None:
    if len(encoded) == 0:
        raise ValueError("no canaries to score")
    limit = _context_limit(model)
    longest = int(encoded.lengths.max())
    if limit is not None and longest > limit:
        index = int(encoded.lengths.argmax())
        raise ValueError(
            f"canary {index} has {longest} tokens but the model's context is {limit}; "
            "use shorter canaries (or a model with a longer context)"
        )


@contextlib.contextmanager
def _audit_mode(model: Any, device: torch.device) -> Iterator[None]:
    """Eval mode, no gradients, forked RNG; restores every module's mode afterwards."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [m.training for m in modules]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if isinstance(model, torch.nn.Module):
                model.eval()
            yield
    finally:
        for module, mode in zip(modules, modes):
            module.training = mode


def _progress(batches: list, enabled: bool):
    if not enabled:
        return batches
    from tqdm.auto import tqdm

    # delay: short audits (the common case under a training loop's own bar) show no bar at all
    return tqdm(batches, desc="mia_guard: scoring canaries", unit="batch", leave=False, delay=2)
