"""What one audit costs, by canary count, canary length and model size (CPU, one process).

For each model size: the time of one training step (forward + backward + AdamW on a batch
of ``--batch`` rows of ``--seq`` tokens) and, per canary set, one audit split into scoring
(the forward pass over the canaries) and attacks + metrics (the default attacks). Times are
process CPU seconds (steady on a machine shared with other work; equal to wall time on idle
cores with one thread) with the wall seconds beside them. The last column compares the
measured audit scoring / training step ratio with the rule of docs/cost_model.md:
scoring ≈ (input tokens of the canaries) / (3 × tokens per training step) training steps.

    python benchmarks/audit_cost.py                         # the grid of docs/cost_model.md
    python benchmarks/audit_cost.py --models 2x64 4x256 --counts 128 512 --lengths
    python benchmarks/audit_cost.py --models --counts 2048 --history --audits 100   # history writes only
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mia_guard import Auditor, CanarySet
from mia_guard.experiments.demo_assets import (
    CausalLMCollator,
    byte_tokenizer,
    stdlib_corpus,
    tiny_gpt2,
)


def timed(fn):
    """``(result, cpu seconds, wall seconds)`` of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def train_step_seconds(model, batch: int, seq: int, repeats: int = 3) -> float:
    """Median CPU seconds of one AdamW step on ``batch`` random rows of ``seq`` tokens."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = [{"input_ids": torch.randint(3, 259, (seq,)).tolist()} for _ in range(batch)]
    inputs = CausalLMCollator()(rows)
    model.train()
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        _, cpu, _ = timed(lambda: (model(**inputs).loss.backward(), optimizer.step(), optimizer.zero_grad()))
        times.append(cpu)
    model.eval()
    return statistics.median(times[1:])


def audit_row(
    model, canaries: CanarySet, tokenizer, step_s: float, tokens_per_step: int, batch_size: int | None = None
) -> dict:
    auditor = Auditor(canaries, tokenizer, batch_size=batch_size)
    auditor.evaluate(auditor.score(model), 0)  # warm-up; the reference for calibrated attacks
    stats, score_cpu, score_wall = timed(lambda: auditor.score(model))
    _, attack_cpu, attack_wall = timed(lambda: auditor.evaluate(stats, 1))
    input_tokens = int(auditor.encoded.lengths.sum())
    return {
        "canaries": len(canaries),
        "input_tokens": input_tokens,
        "scored": int(stats.mask.sum()),
        "width": stats.num_positions,
        "score_cpu": score_cpu,
        "score_wall": score_wall,
        "attack_cpu": attack_cpu,
        "attack_wall": attack_wall,
        "steps": score_cpu / step_s,
        "rule": input_tokens / (3 * tokens_per_step),
    }


def print_row(label: str, params: float, r: dict) -> None:
    print(
        f"{label:>8} {params:6.1f}M {r['canaries']:6d} {r['input_tokens']:8d} {r['scored']:7d} {r['width']:4d}  "
        f"{r['score_cpu']:7.2f} ({r['score_wall']:6.2f})  {r['attack_cpu']:7.2f} ({r['attack_wall']:6.2f})  "
        f"{r['steps']:7.2f} {r['rule']:6.2f}"
    )


def history_write_costs(canaries: CanarySet, tokenizer, model, audits: int, directory: str) -> list[dict]:
    """Append ``audits`` audits of ``canaries`` (full token statistics) to a history store, as
    a training run does; per audit: bytes written, CPU and wall seconds, and the store's total bytes."""
    import dataclasses
    from pathlib import Path

    from mia_guard import AuditHistory

    auditor = Auditor(canaries, tokenizer, attacks=["loss"])
    result = auditor.audit(model, 0)
    path = Path(directory) / "history.json"
    history = auditor.history
    writer = AuditHistory(history.canary_hash, history.is_member, history.fprs, history.confidence).store(path)
    rows = []
    for step in range(audits):
        receipt, cpu, wall = timed(lambda: writer.append(dataclasses.replace(result, step=step)))
        total = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
        rows.append({"bytes": receipt.bytes, "cpu": cpu, "wall": wall, "total": total})
    return rows


def legacy_rewrite_seconds(canaries: CanarySet, tokenizer, model, audits: int, directory: str) -> tuple[float, int]:
    """CPU seconds and bytes of rewriting one single-file ``history.json`` (mia_guard 0.2's way,
    after every audit) holding ``audits`` audits."""
    import dataclasses
    from pathlib import Path

    from mia_guard._io import atomic_write_json

    auditor = Auditor(canaries, tokenizer, attacks=["loss"])
    result = auditor.audit(model, 0)
    for step in range(1, audits):
        auditor.history.append(dataclasses.replace(result, step=step))
    path = Path(directory) / "history.json"
    _, cpu, _ = timed(lambda: atomic_write_json(path, auditor.history.to_dict()))
    return cpu, path.stat().st_size


def print_history_costs(canaries: CanarySet, tokenizer, model, audits: int) -> None:
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        rows = history_write_costs(canaries, tokenizer, model, audits, tmp)
    first, last = rows[0], rows[-1]
    early = np.median([r["cpu"] for r in rows[:5]])
    late = np.median([r["cpu"] for r in rows[-5:]])
    totals = np.array([r["total"] for r in rows], dtype=float)
    k = np.arange(1, audits + 1)
    slope, intercept = np.polyfit(k, totals, 1)
    worst = np.max(np.abs(totals - (slope * k + intercept))) / totals[-1]
    print(f"append-only history, {audits} audits of {len(canaries)} canaries (token statistics kept):")
    print(f"  bytes written: first audit {first['bytes']:,}, last {last['bytes']:,} (ratio {last['bytes'] / first['bytes']:.3f})")
    print(f"  write time: first {first['cpu'] * 1e3:.1f} ms CPU ({first['wall'] * 1e3:.1f} ms wall), "
          f"last {last['cpu'] * 1e3:.1f} ms CPU ({last['wall'] * 1e3:.1f} ms wall); medians of the first and last "
          f"five: {early * 1e3:.1f} and {late * 1e3:.1f} ms CPU (ratio {late / early:.2f})")
    print(f"  total on disk after {audits} audits: {totals[-1] / 2**20:.1f} MiB; linear in the audit count "
          f"({slope / 1024:.1f} KiB per audit, largest deviation from the line {worst:.2%} of the total)")
    for n in (1, audits):
        with tempfile.TemporaryDirectory() as tmp:
            cpu, size = legacy_rewrite_seconds(canaries, tokenizer, model, n, tmp)
        print(f"  for comparison, the single-file history.json rewritten after audit {n:3d}: {size / 2**20:6.1f} MiB, "
              f"{cpu * 1e3:.0f} ms CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["2x64", "4x256", "6x512"], help="LAYERSxWIDTH GPT-2s")
    parser.add_argument("--counts", nargs="+", type=int, default=[128, 512, 2048])
    parser.add_argument("--max-work", type=float, default=1e12,
                        help="skip grid cells above this many parameter x input tokens")
    parser.add_argument("--lengths", action="store_true",
                        help="also: 512 text canaries of 32, 96 and 224 bytes on the second model "
                        "(the longest also at batch size 8)")
    parser.add_argument("--history", action="store_true",
                        help="also: bytes and time of each audit's history write over --audits audits")
    parser.add_argument("--audits", type=int, default=100, help="audits for --history")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = byte_tokenizer()
    tokens_per_step = args.batch * args.seq

    print("CPU seconds (wall seconds); 'steps' = audit scoring / one training step, 'rule' = its prediction")
    print(f"{'model':>8} {'params':>7} {'canary':>6} {'in_tok':>8} {'scored':>7} {'T':>4}  "
          f"{'scoring':>16}  {'attacks':>16}  {'steps':>7} {'rule':>6}")
    for spec in args.models:
        layers, width = map(int, spec.split("x"))
        model = tiny_gpt2(n_layer=layers, n_embd=width, n_head=max(2, width // 64), n_positions=256, seed=0)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        step_s = train_step_seconds(model, args.batch, args.seq)
        print(f"{spec:>8} {params:6.1f}M  training step ({args.batch} x {args.seq} tokens): {step_s:.3f} s CPU")
        for count in args.counts:
            canaries = CanarySet.generate(count, "code_credential", seed=0)
            if params * 1e6 * count * 34 > args.max_work:  # ~34 input tokens per credential canary
                print(f"{spec:>8} {params:6.1f}M {count:6d}  skipped (over --max-work)")
                continue
            print_row(spec, params, audit_row(model, canaries, tokenizer, step_s, tokens_per_step))
        if args.lengths and spec == args.models[min(1, len(args.models) - 1)]:
            for length in (32, 96, 224):
                chunks = stdlib_corpus(max_chars=1024 * length, chunk_chars=length, seed=1)
                texts = list(dict.fromkeys(chunks))[:512]  # canary texts must be distinct
                canaries = CanarySet.from_texts(texts, seed=0)
                print_row(f"text{length}", params, audit_row(model, canaries, tokenizer, step_s, tokens_per_step))
                if length == 224:  # the default token-budget batch (64 rows here) against small batches on CPU
                    row = audit_row(model, canaries, tokenizer, step_s, tokens_per_step, batch_size=8)
                    print_row("  bs=8", params, row)
    if args.history:
        model = tiny_gpt2(seed=0)
        for count in args.counts:
            print_history_costs(CanarySet.generate(count, "code_credential", seed=0), tokenizer, model, args.audits)


if __name__ == "__main__":
    main()
