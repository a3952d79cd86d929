"""Training-time overhead of MIAAuditCallback at the demo's default cadence.

Trains the demo's model (same data, seed and Trainer setup) without and with the audit
callback, alternating the order over ``--repeats`` rounds so drift in machine load
cancels, and prints the ratio of training wall times (goal: <= 1.03). The "with" time
includes everything the callback does: scoring, attacks, metrics, history.json,
TensorBoard and JSONL writes, the gate, and the final report files.

    python benchmarks/callback_overhead.py                 # demo defaults, 1 thread
    python benchmarks/callback_overhead.py --every 200     # another cadence
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mia_guard.demo import DemoConfig, build_callback, build_trainer, build_training_rows, resolve_device
from mia_guard.demo_assets import byte_tokenizer


def train_seconds(config: DemoConfig, rows: list, tokenizer, canaries, device: str, audited: bool) -> tuple[float, int]:
    """Wall time of ``trainer.train()`` and the number of audits it ran."""
    callbacks = [build_callback(config, canaries, tokenizer)] if audited else []
    trainer = build_trainer(config, callbacks, rows, tokenizer, device)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return seconds, len(callbacks[0].history) if audited else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--every", type=int, default=defaults.every)
    parser.add_argument("--canaries", type=int, default=defaults.canaries)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (without, with) in alternating order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            defaults, steps=args.steps, every=args.every, canaries=args.canaries, device=args.device,
            output_dir=Path(tmp), progress=False,
        )
        device = resolve_device(config.device)
        tokenizer = byte_tokenizer()
        canaries, rows = build_training_rows(config, tokenizer)
        times: dict[bool, list[float]] = {False: [], True: []}
        audits = 0
        for round_ in range(args.repeats):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for audited in order:
                seconds, n = train_seconds(config, rows, tokenizer, canaries, device, audited)
                times[audited].append(seconds)
                audits = max(audits, n)
                print(f"round {round_ + 1}: {'with' if audited else 'without'} callback {seconds:7.2f} s")

    plain, audited = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"\n{config.steps} steps on {device} ({args.threads} thread(s)), {audits} audits of {config.canaries} canaries "
        f"with {len(config.attacks)} attacks, every {config.every} steps"
    )
    print(f"median training time without callback: {plain:.2f} s, with: {audited:.2f} s")
    print(f"per audit: {(audited - plain) / max(audits, 1):.3f} s")
    print(f"overhead ratio (with / without): {audited / plain:.3f}   (goal <= 1.03)")


if __name__ == "__main__":
    main()
