"""score_tokens vs a plain ``model(input_ids)`` forward: throughput and peak memory ratios.

Both run over the same canaries, the same padded batches and batch size. Peak memory
is measured in a fresh subprocess per mode (CPU: growth of the process's max RSS over
its baseline; CUDA: ``max_memory_allocated``) so one does not pollute the other; the
speed ratio is the median of per-round ratios where each round times both back to back
in one process, so load from other processes affects both alike.

    python benchmarks/scoring_throughput.py                 # GPT-2-sized vocab (50257)
    python benchmarks/scoring_throughput.py --vocab 259     # byte-level vocab

Goal (issue): throughput >= 0.95x the plain forward, peak memory <= 1.0x of it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _workload(mode: str, kind: str, vocab: int, n: int, batch: int, device: str, repeats: int) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mia_guard import CanarySet, score_tokens
    from mia_guard.canaries.encoding import encode_canaries
    from mia_guard.experiments.demo_assets import byte_tokenizer, stdlib_corpus
    from mia_guard.scoring.forward import _length_sorted_batches, _pad

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_layer=2, n_embd=64, n_head=2)
    model = GPT2LMHeadModel(config).to(device).eval()
    tok = byte_tokenizer()
    canaries = (
        CanarySet.generate(n, "code_credential", seed=0)
        if kind == "templated"
        else CanarySet.from_texts(stdlib_corpus(max_chars=n * 100, chunk_chars=100)[:n], seed=0)
    )
    encoded = encode_canaries(canaries, tok)
    batches = [_pad(encoded, rows, torch.device(device)) for rows in _length_sorted_batches(encoded, batch)]
    tokens = int(encoded.lengths.sum())

    def plain() -> None:
        with torch.no_grad():
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask).logits.sum().item()

    def scored() -> None:
        score_tokens(model, encoded, batch_size=batch, device=device)

    if mode == "timing":
        scored(), plain()  # warm-up
        ratios, rates = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            plain()
            t1 = time.perf_counter()
            scored()
            t2 = time.perf_counter()
            ratios.append((t1 - t0) / (t2 - t1))
            rates.append((tokens / (t1 - t0), tokens / (t2 - t1)))
        return {"speed_ratio": sorted(ratios)[len(ratios) // 2], "plain_tok_s": rates[-1][0], "score_tok_s": rates[-1][1]}
    run = scored if mode == "score_tokens" else plain
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run()  # warm-up, inside the memory window: the peak is the workload's high-water mark
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "peak_bytes": peak}


def _measure_in_subprocess(args: argparse.Namespace, mode: str, kind: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--kind", kind, "--vocab", str(args.vocab),
           "--n", str(args.n), "--batch", str(args.batch), "--device", args.device, "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--n", type=int, default=384, help="canaries")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["plain", "score_tokens", "timing"])
    parser.add_argument("--kind", default="templated", choices=["templated", "texts"])
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(1)
        result = _workload(args.child, args.kind, args.vocab, args.n, args.batch, args.device, args.repeats)
        print(json.dumps(result))
        return
    print(f"{args.n} canaries, batch {args.batch}, vocab {args.vocab}, device {args.device}, 1 thread")
    print(f"{'canaries':<10} {'plain tok/s':>12} {'score tok/s':>12} {'speed ratio':>12} "
          f"{'plain peak MB':>14} {'score peak MB':>14} {'memory ratio':>13}")
    for kind in ("templated", "texts"):
        plain = _measure_in_subprocess(args, "plain", kind)
        scored = _measure_in_subprocess(args, "score_tokens", kind)
        timing = _measure_in_subprocess(args, "timing", kind)
        memory = scored["peak_bytes"] / max(plain["peak_bytes"], 1)
        print(f"{kind:<10} {timing['plain_tok_s']:>12.0f} {timing['score_tok_s']:>12.0f} {timing['speed_ratio']:>12.2f} "
              f"{plain['peak_bytes'] / 2**20:>14.1f} {scored['peak_bytes'] / 2**20:>14.1f} {memory:>13.2f}")
    print("goal: speed ratio >= 0.95, memory ratio <= 1.0")


if __name__ == "__main__":
    main()
