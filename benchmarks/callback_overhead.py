"""Training-time overhead of MIAAuditCallback at the demo's default cadence.

Trains the demo's model (same data, seed and Trainer setup) without and with the audit
callback, alternating the order over ``--repeats`` rounds so drift in machine load
cancels, and prints the ratio of training times (goal: <= 1.03), wall-clock and process
CPU time (the steadier one on a machine shared with other work). The "with" time includes
everything the callback does: scoring, attacks, metrics, history.json, TensorBoard and
JSONL writes, the gate, and the final report files. The seconds the callback itself
timed (per audit, and the one-off report) are printed too, to split the overhead.

    python benchmarks/callback_overhead.py                 # demo defaults, 1 thread
    python benchmarks/callback_overhead.py --every 200     # another cadence
    python benchmarks/callback_overhead.py --budget 0.03   # the cadence an overhead budget sets
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mia_guard.experiments.demo import DemoConfig, build_callback, build_trainer, build_training_rows, resolve_device
from mia_guard.experiments.demo_assets import byte_tokenizer


def train_seconds(
    config: DemoConfig, rows: list, tokenizer, canaries, device: str, audited: bool
) -> tuple[float, float, dict]:
    """Wall and process CPU seconds of ``trainer.train()``; with the callback also the number
    of audits and the wall seconds it spent in them (``audits_s``) and in the final ``report``."""
    callbacks = [build_callback(config, canaries, tokenizer)] if audited else []
    trainer = build_trainer(config, callbacks, rows, tokenizer, device)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not audited:
        return wall, cpu, {}
    session = callbacks[0].session
    return wall, cpu, {
        "audits": len(session.history),
        "steps": session.history.steps,
        "audits_s": session.seconds["audits"],
        "report": session.seconds["report"],
        "measured_overhead": session.cadence.summary().get("audit_overhead"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--every", type=int, default=defaults.every)
    parser.add_argument("--canaries", type=int, default=defaults.canaries)
    parser.add_argument("--budget", type=float, default=None,
                        help="overhead_budget of the callback (then --every is not used)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (without, with) in alternating order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            defaults, steps=args.steps, every=args.every, canaries=args.canaries, device=args.device,
            output_dir=Path(tmp), progress=False, overhead_budget=args.budget,
        )
        device = resolve_device(config.device)
        tokenizer = byte_tokenizer()
        canaries, rows = build_training_rows(config, tokenizer)
        times: dict[tuple[bool, str], list[float]] = {(a, k): [] for a in (False, True) for k in ("wall", "cpu")}
        spent: list[dict] = []
        for round_ in range(args.repeats):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for audited in order:
                wall, cpu, inside = train_seconds(config, rows, tokenizer, canaries, device, audited)
                times[audited, "wall"].append(wall)
                times[audited, "cpu"].append(cpu)
                label = "with   " if audited else "without"
                extra = ""
                if audited:
                    spent.append(inside)
                    extra = (f"  (in audits {inside['audits_s']:.2f} s, report {inside['report']:.2f} s; audited at "
                             f"steps {inside['steps']}; overhead the callback measured: {inside['measured_overhead']})")
                print(f"round {round_ + 1}: {label} callback  wall {wall:7.2f} s  cpu {cpu:7.2f} s{extra}")

    n_audits = spent[0]["audits"]
    cadence = f"overhead budget {args.budget}" if args.budget is not None else f"every {config.every} steps"
    print(
        f"\n{config.steps} steps on {device} ({args.threads} thread(s)), {n_audits} audits of {config.canaries} "
        f"canaries with {len(config.attacks)} attacks, {cadence}"
    )
    for kind in ("wall", "cpu"):
        plain, audited = statistics.median(times[False, kind]), statistics.median(times[True, kind])
        print(f"{kind:>4}: median {plain:.2f} s without, {audited:.2f} s with: ratio {audited / plain:.3f}")
    plain_wall = statistics.median(times[False, "wall"])
    audit_s = statistics.median(s["audits_s"] for s in spent)
    report_s = statistics.median(s["report"] for s in spent)
    n_audits = statistics.median(s["audits"] for s in spent)
    print(
        f"timed inside the callback: {audit_s / n_audits:.3f} s per audit, {report_s:.2f} s for the final report; "
        f"(training + audits) / training = {(plain_wall + audit_s) / plain_wall:.3f}, "
        f"with the report {(plain_wall + audit_s + report_s) / plain_wall:.3f}"
    )
    print("goal: ratio <= 1.03")


if __name__ == "__main__":
    main()
