"""The users' workload: fine-tune the top layers of SmolLM2-135M on Python source with planted canaries.

Shared by ``benchmarks/real_model.py``, ``benchmarks/shadow_runs.py`` and the slow
end-to-end test. Nothing is downloaded (:mod:`mia_guard.experiments.smollm2`).

Data (:func:`build_data`): chunks of the Python standard library's source
(:func:`~mia_guard.experiments.demo_assets.stdlib_corpus`) are the fine-tuning set;
two canary sets are planted, both token-aligned to SmolLM2's BPE tokenizer
(:mod:`mia_guard.canaries.token_alignment`):

- ``code_credential`` canaries: ``API_SECRET_KEY = "<12 BPE tokens>"``;
- in-distribution ``texts`` canaries: held-out source chunks cut to ``window`` tokens.

Training (:func:`train_and_score`): AdamW on the top ``k`` decoder layers (the rest of
the model frozen), one pass over the fine-tuning set with each member inserted
``repetitions`` times, batches of sequences (one chunk or one canary each), through
:class:`~mia_guard.experiments.frozen_prefix.FrozenPrefix` (the frozen lower layers run
once per sequence). The canaries are scored with
:func:`~mia_guard.scoring.forward.score_tokens` at evenly spaced audits, step 0 (the
pretrained model: the reference) first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..canaries.canary_set import CanarySet
from ..canaries.encoding import EncodedCanaries, encode_canaries
from ..canaries.token_alignment import cut_to_window
from ..scoring.forward import score_tokens
from ..scoring.token_stats import TokenStats
from .demo_assets import stdlib_corpus
from .frozen_prefix import FrozenPrefix, training_loss

KINDS = ("code_credential", "texts")


@dataclass
class PlantedData:
    """The fine-tuning chunks and the canary sets, tokenized.

    Attributes:
        canaries: ``{kind: CanarySet}`` for :data:`KINDS`.
        encoded: ``{kind: EncodedCanaries}`` (SmolLM2 adds no special tokens: ids = text tokens).
        filler: token ids of the fine-tuning chunks (no canary among them).
    """

    canaries: dict[str, CanarySet]
    encoded: dict[str, EncodedCanaries]
    filler: list[list[int]]

    def sequences(self) -> list[list[int]]:
        """Every distinct sequence the runs train on or score: filler, then canaries by kind."""
        return list(self.filler) + [ids for encoded in self.encoded.values() for ids in encoded.input_ids]


def build_data(
    tokenizer: Any,
    *,
    n_canaries: int,
    n_filler: int,
    window: int = 24,
    filler_tokens: int = 48,
    seed: int = 0,
    kinds: Sequence[str] = KINDS,
) -> PlantedData:
    """Canary sets (token-aligned, exact-half splits) and fine-tuning chunks from the stdlib corpus.

    The text canaries are chunks with at least ``window`` tokens that are *not* in the
    fine-tuning chunks; fine-tuning chunks are cut to ``filler_tokens`` tokens.
    """
    chunks = stdlib_corpus(max_chars=(n_canaries + n_filler) * 400, chunk_chars=200, seed=seed)
    ids = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks]
    usable = [i for i, chunk in enumerate(chunks) if cut_to_window(chunk, tokenizer, window) is not None]
    if len(usable) < n_canaries + n_filler:
        raise ValueError(
            f"the corpus has {len(usable)} usable chunks of >= {window} tokens, need {n_canaries + n_filler}"
        )
    canaries: dict[str, CanarySet] = {}
    if "texts" in kinds:
        texts = [chunks[i] for i in usable[:n_canaries]]
        canaries["texts"] = CanarySet.from_texts(texts, seed=seed, split="half", tokenizer=tokenizer,
                                                 window_tokens=window)
    if "code_credential" in kinds:
        canaries["code_credential"] = CanarySet.generate(n_canaries, "code_credential", seed=seed, split="half",
                                                         tokenizer=tokenizer)
    filler = [ids[i][:filler_tokens] for i in usable[n_canaries : n_canaries + n_filler]]
    encoded = {kind: encode_canaries(c, tokenizer) for kind, c in canaries.items()}
    return PlantedData(canaries, encoded, filler)


@dataclass
class ScoredRun:
    """One fine-tuning run: per canary kind, the TokenStats at each audit (step 0 first).

    Attributes:
        steps: audited steps.
        stats: ``{kind: [TokenStats per audit]}``.
        is_member: ``{kind: bool [N]}`` the split this run trained with.
        seconds_per_step: mean wall seconds of a training step (top model on cached states).
        seconds_per_audit: mean wall seconds of scoring every canary once.
        cpu_per_step, cpu_per_audit: the same in process CPU seconds (wall time on a shared
            machine is inflated by other processes; CPU time is not).
        cpu_seconds: process CPU seconds of the whole run.
    """

    steps: list[int]
    stats: dict[str, list[TokenStats]]
    is_member: dict[str, np.ndarray]
    seconds_per_step: float
    seconds_per_audit: float
    cpu_seconds: float
    cpu_per_step: float = float("nan")
    cpu_per_audit: float = float("nan")


def train_and_score(
    prefix: FrozenPrefix,
    hidden: dict[tuple[int, ...], torch.Tensor],
    data: PlantedData,
    is_member: dict[str, np.ndarray],
    *,
    repetitions: int,
    lr: float,
    batch_size: int = 16,
    audits: int = 3,
    seed: int = 0,
    label: str = "",
) -> ScoredRun:
    """Fine-tune a fresh copy of ``prefix.top`` with the members of ``is_member`` inserted ``repetitions`` times.

    Args:
        prefix: the split model; its top model is copied, never changed.
        hidden: cached hidden states of every sequence of ``data`` (:func:`cache_hidden`).
        data: the fine-tuning chunks and canaries.
        is_member: ``{kind: bool [N]}`` the split of this run (e.g. another run's for shadow runs).
        repetitions: insertions of each member.
        lr, batch_size: AdamW learning rate (no weight decay, constant) and sequences per step.
        audits: evenly spaced audits, step 0 included.
        seed: data order.
    """
    started_cpu = time.process_time()
    top = prefix.top
    original = {name: p.detach().clone() for name, p in top.named_parameters() if p.requires_grad}
    items = [tuple(row) for row in data.filler]
    for kind, members in is_member.items():
        items += [tuple(data.encoded[kind].input_ids[i]) for i in np.flatnonzero(members) for _ in range(repetitions)]
    order = np.random.default_rng([seed, 7]).permutation(len(items))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    audit_steps = np.unique(np.linspace(0, len(batches), audits).round().astype(int)).tolist()
    optimizer = torch.optim.AdamW([p for p in top.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    scorer = prefix.scorer(list(hidden), list(hidden.values()))
    stats: dict[str, list[TokenStats]] = {kind: [] for kind in is_member}
    step_seconds, audit_seconds, step_cpu, audit_cpu = [], [], [], []
    try:
        for step in range(len(batches) + 1):
            if step in audit_steps:
                tic, cpu = time.perf_counter(), time.process_time()
                for kind in is_member:
                    stats[kind].append(score_tokens(scorer, data.encoded[kind]))
                audit_seconds.append(time.perf_counter() - tic)
                audit_cpu.append(time.process_time() - cpu)
                print(f"  {label} step {step}/{len(batches)} scored ({audit_seconds[-1]:.0f} s)", flush=True)
            if step == len(batches):
                break
            tic, cpu = time.perf_counter(), time.process_time()
            top.train()
            rows = [items[i] for i in batches[step]]
            training_loss(prefix, [hidden[r] for r in rows], rows).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            top.eval()
            step_seconds.append(time.perf_counter() - tic)
            step_cpu.append(time.process_time() - cpu)
    finally:
        with torch.no_grad():
            for name, p in top.named_parameters():
                if name in original:
                    p.copy_(original[name])
    return ScoredRun(audit_steps, stats, {k: v.copy() for k, v in is_member.items()}, float(np.mean(step_seconds)),
                     float(np.mean(audit_seconds)), time.process_time() - started_cpu, float(np.mean(step_cpu)),
                     float(np.mean(audit_cpu)))


def cache_hidden(prefix: FrozenPrefix, data: PlantedData, batch_size: int = 16) -> dict[tuple[int, ...], torch.Tensor]:
    """Hidden states entering the trainable layers for every sequence of ``data``, keyed by token ids."""
    sequences = list({tuple(s): None for s in data.sequences()})
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths per batch
    states = prefix.hidden([sequences[i] for i in order], batch_size)
    return {sequences[i]: h for i, h in zip(order, states)}


def finish_report(report: dict, wall_start: float, cpu_start: float, out: str | None) -> dict:
    """Add the benchmark's total wall and CPU seconds (since ``time.perf_counter()`` =
    ``wall_start`` and ``time.process_time()`` = ``cpu_start``) to ``report``, print them and
    write ``report`` as JSON to ``out`` (when given)."""
    from .._io import atomic_write_json

    report["wall_seconds"], report["cpu_seconds"] = time.perf_counter() - wall_start, time.process_time() - cpu_start
    print(f"total {report['wall_seconds']:.0f} s wall, {report['cpu_seconds']:.0f} s CPU")
    if out:
        atomic_write_json(out, report)
    return report
