"""One forward pass over the canaries -> :class:`~mia_guard.scoring.token_stats.TokenStats`.

:func:`score_tokens` runs a causal LM (any Hugging Face ``PreTrainedModel``, or any
callable ``f(input_ids, attention_mask) -> logits [B, T, V]`` / an object with
``.logits``) over the canaries in length-sorted batches and computes, per scored
token, the statistics every attack reads (:mod:`mia_guard.scoring.statistics`).

Cost at real vocabulary sizes is dominated by the output head (``width x vocab`` per
position), so the head is the part kept efficient. For Hugging Face models whose logits
are a plain linear head over the final hidden state (checked numerically on the first
canary), the hidden states of the *scored* positions of a batch are gathered into one
``[P, width]`` matrix and the head is applied to chunks of them as one matrix product
into a reused float32 buffer: no logits for padding or unscored positions, no
``[B, T, V]`` logits tensor (a plain forward allocates and page-faults a fresh one per
batch), and chunks of ``CHUNK_ROWS`` positions keep the product's row count large. Other models
give full logits; their scored rows are copied into the same buffer. The progress bar
counts scored tokens and moves after every chunk.

Auditing changes nothing: eval mode is set and every module's previous mode restored,
gradients are off, and the global RNG state (CPU and CUDA) is forked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..canaries.canary_set import CanarySet
from ..canaries.encoding import EncodedCanaries, encode_canaries
from .checks import check_logits, check_token_ids, scorable_model
from .statistics import StatisticsWorkspace, logit_statistics
from .token_stats import STAT_FIELDS, TokenStats

#: Scored positions per output-head chunk: from ~256 rows on, the head's matrix product runs
#: at full speed on CPU (fewer rows cost up to 20% more per position)...
CHUNK_ROWS = 512
#: ...unless the float32 logits buffer ``[rows, V]`` would exceed this many bytes (huge vocabularies).
CHUNK_BYTES = 128 * 2**20
#: Default upper bound on padded tokens per batch on accelerators...
BATCH_TOKENS = 16384
#: ...and on CPU, where small batches keep the model's activations in cache (the output head's
#: chunks do not depend on the batch: scored positions are queued across batches).
CPU_BATCH_TOKENS = 2048
MAX_BATCH_SIZE = 64
#: Tokens the output-head shortcut is verified on (a causal model's head sees each position alone).
VERIFY_TOKENS = 8


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
        chunk_size: scored positions per output-head chunk; default ``CHUNK_ROWS`` (fewer
            when their float32 logits exceed ``CHUNK_BYTES``). Results do not depend on it
            (nor on ``batch_size``) beyond 1e-5.
        device: where to run; default is the model's device (CPU for plain callables).
        progress: show a progress bar over the scored tokens (updated after every chunk).

    Returns:
        TokenStats with N rows in the canaries' order.
    """
    model = scorable_model(model)
    encoded = canaries if isinstance(canaries, EncodedCanaries) else encode_canaries(canaries, tokenizer)
    _check_context_length(model, encoded)
    check_token_ids(model, encoded, canaries.texts if isinstance(canaries, CanarySet) else None)
    device = torch.device(device) if device is not None else _model_device(model)
    if batch_size is None:
        batch_size = default_batch_size(encoded, device)
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")

    with _audit_mode(model, device), _progress(int(encoded.num_scored.sum()), progress) as bar:
        scorer = _Scorer(model, encoded, device, chunk_size, bar)
        for rows in _length_sorted_batches(encoded, batch_size):
            ids, attention = _pad(encoded, rows, device)
            scorer.add_batch(ids, attention, _ScoredPositions.of_batch(encoded, rows, ids))
        scorer.flush()
    return TokenStats(**scorer.out, mask=scorer.mask)


def default_batch_size(encoded: EncodedCanaries, device: torch.device | None = None) -> int:
    """Canaries per batch from a padded-token budget: ``CPU_BATCH_TOKENS`` on CPU,
    ``BATCH_TOKENS`` elsewhere (also when ``device`` is not known), at most ``MAX_BATCH_SIZE``."""
    budget = CPU_BATCH_TOKENS if device is not None and torch.device(device).type == "cpu" else BATCH_TOKENS
    return max(1, min(MAX_BATCH_SIZE, budget // int(encoded.lengths.max())))


# ---------------------------------------------------------------------------- scoring
class _Scorer:
    """Runs the model batch by batch and turns the scored positions into statistics in chunks.

    With a verified linear output head (:func:`_verified_head`) the final hidden states of
    scored positions are queued across batches and the head runs on full chunks of
    positions, however few a batch holds; otherwise each batch's logits are consumed
    before the next batch runs. Results go to :attr:`out` / :attr:`mask` (``[N, T]``).
    """

    def __init__(self, model: Any, encoded: EncodedCanaries, device: torch.device, chunk_size: int | None,
                 bar: Any) -> None:
        self.model = model
        self.head = _verified_head(model, encoded, device)
        self.buffers = _ChunkBuffers(chunk_size, device)
        self.bar = bar
        width = int(encoded.num_scored.max())
        self.out = {name: torch.zeros(len(encoded), width) for name in STAT_FIELDS}
        self.mask = torch.zeros(len(encoded), width, dtype=torch.bool)
        self.pending: list[tuple[torch.Tensor, _ScoredPositions]] = []

    def add_batch(self, ids: torch.Tensor, attention: torch.Tensor, scored: "_ScoredPositions") -> None:
        if self.head is None:
            logits = _call_for_logits(self.model, ids, attention)
            flat = logits.reshape(-1, logits.shape[-1])
            index = scored.batch_index * logits.shape[1] + scored.logit_index

            def copy_rows(c0: int, c1: int, buffer: torch.Tensor) -> torch.Tensor:
                if flat.dtype == buffer.dtype:
                    return torch.index_select(flat, 0, index[c0:c1], out=buffer)
                return buffer.copy_(flat[index[c0:c1]])

            self._score(scored, copy_rows, int(logits.shape[-1]))
            return
        base = self.head[0]
        hidden = base(input_ids=ids, attention_mask=attention).last_hidden_state
        self.pending.append((hidden[scored.batch_index, scored.logit_index], scored))
        self._drain(final=False)

    def flush(self) -> None:
        """Score what is still queued (the last, partial chunk)."""
        if self.pending:
            self._drain(final=True)

    def _drain(self, final: bool) -> None:
        """Run the head on every full chunk of queued positions (and on the rest when ``final``)."""
        _, head, vocab = self.head
        queued = sum(len(scored) for _, scored in self.pending)
        rows = self.buffers.rows(vocab)
        usable = queued if final else queued - queued % rows
        if usable == 0:
            return
        hidden = torch.cat([h for h, _ in self.pending]) if len(self.pending) > 1 else self.pending[0][0]
        scored = _ScoredPositions.concat([s for _, s in self.pending])
        self._score(scored.take(0, usable), lambda c0, c1, buffer: _apply_head(head, hidden[c0:c1], buffer), vocab)
        self.pending = [(hidden[usable:], scored.take(usable, queued))] if usable < queued else []

    def _score(self, scored: "_ScoredPositions", fill: Callable, vocab: int) -> None:
        """Statistics of ``scored``, chunk by chunk: ``fill(c0, c1, buffer)`` writes the logits."""
        for c0, c1 in self.buffers.chunks(len(scored), vocab):
            logits = fill(c0, c1, self.buffers.logits[: c1 - c0])
            stats = logit_statistics(logits, scored.targets[c0:c1], self.buffers.workspace)
            scored.scatter(self.out, self.mask, stats, c0, c1)
            self.bar.update(c1 - c0)


# ---------------------------------------------------------------------------- positions
@dataclass(frozen=True)
class _ScoredPositions:
    """The P scored tokens of one padded batch, flattened in (row, token) order.

    Attributes:
        batch_index, logit_index: ``[P]`` (on the model's device): the logits at
            ``[batch_index, logit_index]`` score the token one position later.
        targets: ``[P]`` the scored token ids (on the model's device).
        dest_row, dest_col: ``[P]`` (CPU) where each statistic goes in the ``[N, T]`` output.
    """

    batch_index: torch.Tensor
    logit_index: torch.Tensor
    targets: torch.Tensor
    dest_row: torch.Tensor
    dest_col: torch.Tensor

    @classmethod
    def of_batch(cls, encoded: EncodedCanaries, rows: np.ndarray, ids: torch.Tensor) -> "_ScoredPositions":
        starts, counts = encoded.start[rows], encoded.num_scored[rows]
        batch_index = np.repeat(np.arange(len(rows)), counts)
        column = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        token = starts[batch_index] + column
        device = ids.device
        batch_t = torch.as_tensor(batch_index, device=device)
        token_t = torch.as_tensor(token, device=device)
        return cls(
            batch_index=batch_t,
            logit_index=token_t - 1,
            targets=ids[batch_t, token_t],
            dest_row=torch.as_tensor(rows[batch_index]),
            dest_col=torch.as_tensor(column),
        )

    def __len__(self) -> int:
        return int(self.dest_row.shape[0])

    def take(self, start: int, stop: int) -> "_ScoredPositions":
        """Positions ``start..stop-1``."""
        return _ScoredPositions(*(getattr(self, f.name)[start:stop] for f in fields(self)))

    @staticmethod
    def concat(parts: list["_ScoredPositions"]) -> "_ScoredPositions":
        """The positions of several batches, in order (``batch_index`` then refers to each one's batch)."""
        if len(parts) == 1:
            return parts[0]
        return _ScoredPositions(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(_ScoredPositions)))

    def scatter(self, out: dict, mask: torch.Tensor, stats: dict, c0: int, c1: int) -> None:
        """Copy the statistics of positions ``c0..c1-1`` into the left-aligned ``[N, T]`` output."""
        rows, cols = self.dest_row[c0:c1], self.dest_col[c0:c1]
        for name in STAT_FIELDS:
            out[name][rows, cols] = stats[name].cpu()
        mask[rows, cols] = True


class _ChunkBuffers:
    """The float32 logits buffer ``[R, V]`` and statistics workspace, allocated once and reused."""

    def __init__(self, chunk_size: int | None, device: torch.device) -> None:
        self.chunk_size = chunk_size
        self.device = device
        self.logits: torch.Tensor | None = None
        self.workspace: StatisticsWorkspace | None = None

    def rows(self, vocab: int) -> int:
        """Positions per chunk: ``chunk_size``, else ``CHUNK_ROWS`` capped by ``CHUNK_BYTES``."""
        return self.chunk_size or max(1, min(CHUNK_ROWS, CHUNK_BYTES // (4 * vocab)))

    def chunks(self, positions: int, vocab: int) -> Iterator[tuple[int, int]]:
        """``(c0, c1)`` ranges over ``positions``; (re)allocates the buffers when too small."""
        rows = min(self.rows(vocab), positions)
        if self.logits is None or self.logits.shape[0] < rows or self.logits.shape[1] != vocab:
            self.logits = torch.empty(rows, vocab, dtype=torch.float32, device=self.device)
            block = StatisticsWorkspace.block_rows(vocab, self.device, rows)
            self.workspace = StatisticsWorkspace(block, vocab, self.device)
        step = self.logits.shape[0]
        for c0 in range(0, positions, step):
            yield c0, min(c0 + step, positions)


# ---------------------------------------------------------------------------- logits
def _apply_head(head: torch.nn.Module, hidden: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``head(hidden)`` written into ``buffer`` (float32); a plain float32 ``nn.Linear`` as one
    matrix product straight into the buffer."""
    plain = type(head) is torch.nn.Linear and not (head._forward_hooks or head._forward_pre_hooks)
    if plain and hidden.dtype == head.weight.dtype == buffer.dtype:
        if head.bias is None:
            return torch.mm(hidden, head.weight.t(), out=buffer)
        return torch.addmm(head.bias, hidden, head.weight.t(), out=buffer)
    return buffer.copy_(head(hidden))


def _call_for_logits(model: Any, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    output = model(input_ids=ids, attention_mask=attention) if _is_hf_model(model) else model(ids, attention)
    logits = output.logits if hasattr(output, "logits") else output
    check_logits(logits, ids)
    return logits


def _verified_head(model: Any, encoded: EncodedCanaries, device: torch.device):
    """``(base_model, head, vocab)`` when ``head(base(x))`` reproduces the model's logits (checked
    on the first ``VERIFY_TOKENS`` tokens of the first canary), else ``None``."""
    if not _is_hf_model(model):
        return None
    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return None
    ids = torch.tensor([encoded.input_ids[0][:VERIFY_TOKENS]], device=device)
    attention = torch.ones_like(ids)
    try:
        expected = model(input_ids=ids, attention_mask=attention).logits
        hidden = base(input_ids=ids, attention_mask=attention).last_hidden_state
        got = head(hidden)
    except (TypeError, AttributeError, RuntimeError):
        return None
    if got.shape != expected.shape or not torch.allclose(got.float(), expected.float(), rtol=1e-4, atol=1e-4):
        return None
    return base, head, int(expected.shape[-1])


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


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    """A bar over ``total`` scored tokens (``update(n)``), or a silent stand-in."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    # delay: short audits (the common case under a training loop's own bar) show no bar at all
    with tqdm(total=total, desc="mia_guard: scoring canaries", unit="token", leave=False, delay=2) as bar:
        yield bar


class _NoBar:
    def update(self, n: int) -> None:
        pass
