"""DP-SGD training step vs a non-DP step on the demo model: time and peak memory ratios.

Model: the demo GPT-2 (2 layers, 64 wide, 2 heads, byte vocab 259, ~125k parameters),
one batch of 16 rows × 128 tokens of stdlib source, AdamW, one thread. A step is what
the trainers do per optimizer step: ``Trainer.training_step`` (HF loss, backward) +
``optimizer.step()`` for the baseline; ``DPTrainer.training_step`` (per-sample loss,
backward, per-sample clipping) + the DP optimizer's step (noise, accounting) for DP.

Variants:
  nondp            the baseline (tied embeddings, as the demo model)
  nondp_untied     the baseline with lm_head untied from wte (what ghost mode needs)
  hooks            DPTrainer default: Opacus hooks + mia_guard's Conv1D grad sampler,
                   backward pruned to what the hooks need (DPConfig.prune_backward)
  hooks_unpruned   the same with a full backward (weight gradients computed and dropped)
  hooks_stock      Opacus hooks as shipped (Conv1D through functorch), full backward
  functorch        every layer through functorch (vmap)
  ghost_untied     ghost clipping (untied model; ghost refuses tied weights)

Times: all variants run interleaved in one process (rounds × steps each, after warm-up),
so a busy shared CPU slows all of them alike. Reported: the median step's CPU time of the
(single) compute thread, which other processes barely disturb, and its wall time.
Memory: each variant runs again in its own subprocess, with glibc told to mmap (and
unmap on free) every block >= 64 KiB so that RSS follows the live tensors; after two
warm-up steps the heap is trimmed and the kernel's peak-RSS mark reset, and the peak RSS
growth over the next steps is reported: what a step needs on top of the model and
optimizer state (activations, gradients, per-sample gradients or norms). Linux only.

    python benchmarks/dp_step_time.py                  # all variants
    python benchmarks/dp_step_time.py --rounds 3 --steps 5

Goal (issue): DP step time <= 1.5x non-DP with the best mode that works.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from unittest import mock

# glibc: serve every block >= 64 KiB by mmap and unmap it on free, so RSS follows live tensors
PROBE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
VARIANTS = ("nondp", "nondp_untied", "hooks", "hooks_unpruned", "hooks_stock", "functorch", "ghost_untied")
BATCH, LENGTH = 16, 128


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; the memory probe needs Linux")


def _build(variant: str, tmp: str):
    """(step function, parameter count) for one variant."""
    import torch
    from transformers import Trainer, TrainingArguments

    from mia_guard.defenses.dp import DPConfig, DPTrainer
    from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize

    model = tiny_gpt2(n_positions=LENGTH, seed=0)
    if variant.endswith("untied"):
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    rows = tokenize(stdlib_corpus(max_chars=256 * LENGTH, chunk_chars=LENGTH), byte_tokenizer(), LENGTH)
    batch = CausalLMCollator()(rows[:BATCH])
    args = TrainingArguments(
        output_dir=tmp, per_device_train_batch_size=BATCH, learning_rate=1e-3, report_to=[], use_cpu=True,
        disable_tqdm=True, save_strategy="no", max_steps=10_000,
    )
    common = dict(model=model, args=args, train_dataset=rows, data_collator=CausalLMCollator())
    if variant.startswith("nondp"):
        trainer = Trainer(**common)
    else:
        mode = {"functorch": "functorch", "ghost_untied": "ghost"}.get(variant, "hooks")
        prune = variant not in ("hooks_unpruned", "hooks_stock")
        config = DPConfig(noise_multiplier=1.0, accountant="rdp", grad_sample_mode=mode, prune_backward=prune)
        with _stock_opacus_hooks() if variant == "hooks_stock" else contextlib.nullcontext():
            trainer = DPTrainer(**common, dp_config=config)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; read by its training_step
    optimizer = trainer.optimizer

    def step() -> None:
        trainer.training_step(model, batch)
        optimizer.step()
        model.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _stock_opacus_hooks():
    """While building a DPTrainer: attach Opacus' hooks without mia_guard's Conv1D sampler (functorch for Conv1D)."""
    from opacus.grad_sample import GradSampleHooks

    class StockHooks(GradSampleHooks):
        GRAD_SAMPLERS = {k: v for k, v in GradSampleHooks.GRAD_SAMPLERS.items() if k.__name__ != "Conv1D"}

    with mock.patch(
        "mia_guard.defenses.dp.trainer.attach_grad_sample_hooks",
        lambda model, mode, max_grad_norm: StockHooks(model, loss_reduction="sum"),
    ):
        yield


def _quiet() -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")


def measure_times(variants: list[str], rounds: int, steps: int, tmp: str) -> dict[str, dict]:
    _quiet()
    built = {}
    for variant in variants:
        built[variant] = _build(variant, f"{tmp}/{variant}")
    wall: dict[str, list[float]] = {v: [] for v in built}
    cpu: dict[str, list[float]] = {v: [] for v in built}
    for fn, _ in built.values():
        for _ in range(3):
            fn()  # warm-up
    for _ in range(rounds):
        for variant, (fn, _) in built.items():
            for _ in range(steps):
                start_wall, start_cpu = time.perf_counter(), time.thread_time()
                fn()
                cpu[variant].append(time.thread_time() - start_cpu)
                wall[variant].append(time.perf_counter() - start_wall)
    return {
        v: {"wall_s": statistics.median(wall[v]), "cpu_s": statistics.median(cpu[v]), "params": built[v][1]}
        for v in built
    }


def _probe(variant: str, steps: int, tmp: str) -> dict:
    """Run in a subprocess: peak RSS growth of one variant's steady-state training steps.

    After two warm-up steps (lazy library set-up, optimizer state), freed heap is handed
    back to the OS (``malloc_trim``) and the kernel's peak-RSS mark is reset
    (``/proc/self/clear_refs`` = 5); the peak over the next steps minus the RSS at that
    point is the memory one step needs beyond the model and optimizer.
    """
    _quiet()
    fn, params = _build(variant, tmp)
    fn()
    fn()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    for _ in range(steps):
        fn()
    return {"peak_growth_mib": (_status_kib("VmHWM") - base) / 1024, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant per round (default 6)")
    parser.add_argument("--probe", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="/tmp/mia_guard_dp_bench", help="scratch output_dir for the trainers")
    opts = parser.parse_args()
    if opts.probe:
        print(json.dumps(_probe(opts.probe, max(opts.steps, 4), f"{opts.tmp}/{opts.probe}")))
        return

    results = measure_times(opts.variants, opts.rounds, opts.steps, opts.tmp)
    for variant in opts.variants:
        out = subprocess.run(
            [sys.executable, __file__, "--probe", variant, "--steps", str(opts.steps), "--tmp", opts.tmp],
            check=True, capture_output=True, text=True, env={**os.environ, **PROBE_MALLOC_ENV},
        )
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        results[variant]["peak_growth_mib"] = probe["peak_growth_mib"]

    base = results["nondp"]
    print(
        f"batch {BATCH} x {LENGTH} tokens, {base['params']:,} parameters (tied), 1 thread; medians of "
        f"{opts.rounds} x {opts.steps} interleaved steps"
    )
    print(f"{'variant':<14} {'cpu ms':>7} {'cpu x':>6} {'wall ms':>8} {'wall x':>7} {'peak MiB':>9} {'mem x':>6}")
    for variant in opts.variants:
        r = results[variant]
        print(
            f"{variant:<14} {1000 * r['cpu_s']:7.1f} {r['cpu_s'] / base['cpu_s']:6.2f} "
            f"{1000 * r['wall_s']:8.1f} {r['wall_s'] / base['wall_s']:7.2f} "
            f"{r['peak_growth_mib']:9.1f} {r['peak_growth_mib'] / base['peak_growth_mib']:6.2f}"
        )


if __name__ == "__main__":
    main()
