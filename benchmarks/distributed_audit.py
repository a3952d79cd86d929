"""Audit wall time on 1 process vs 2 processes over the same canaries and weights (CPU, gloo).

Each process count is launched with ``torchrun --standalone --nproc_per_node N`` running this
file as a worker. A worker builds the same seeded GPT-2 and canary set, audits once to warm up
(the first audit also becomes the reference), then times ``--repeats`` audits through
:class:`~mia_guard.callbacks.session.AuditSession` (what the callback and AuditLoop run):
sharded scoring + gather of the statistics (``scoring``), attacks and metrics on rank 0
(``attacks``), broadcast of the result. Every worker uses ``--threads`` torch threads, so 2
processes use twice the cores of 1: the speed-up of the scoring part is the figure of interest;
the attacks run once, on rank 0, either way. On a machine busy with other work the wall
times depend on the load; the CPU time of the busiest process (process time, max over
ranks) is what the wall time would be on idle cores, so its ratio is printed too.

    python benchmarks/distributed_audit.py                        # 512 canaries, 4-layer 256-wide GPT-2
    python benchmarks/distributed_audit.py --canaries 1024 --n-layer 6 --n-embd 384
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from mia_guard import Auditor, CanarySet
    from mia_guard.callbacks.session import AuditSession
    from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_gpt2(n_layer=args.n_layer, n_embd=args.n_embd, n_head=4, seed=0).eval()
    canaries = CanarySet.generate(args.canaries, "code_credential", seed=0)
    auditor = Auditor(canaries, byte_tokenizer())
    with tempfile.TemporaryDirectory() as out:
        session = AuditSession(auditor, out, jsonl=False, is_main=rank == 0)
        session.audit(model, 0)  # warm-up; the reference
        rounds = []
        for step in range(1, args.repeats + 1):
            dist.barrier()
            started, cpu = time.perf_counter(), time.process_time()
            result, _ = session.audit(model, step)
            cpu = torch.tensor([time.process_time() - cpu], dtype=torch.float64)
            dist.all_reduce(cpu, op=dist.ReduceOp.MAX)  # the busiest process sets the pace
            dist.barrier()
            wall = time.perf_counter() - started
            rounds.append({"wall": wall, "cpu": float(cpu), **(result.seconds if rank == 0 else {})})
        if rank == 0:
            Path(args.worker).write_text(json.dumps({"world_size": dist.get_world_size(), "rounds": rounds,
                                                     "parameters": sum(p.numel() for p in model.parameters())}))
    dist.destroy_process_group()


def launch(processes: int, args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        __file__, "--worker", str(out), "--canaries", str(args.canaries), "--n-layer", str(args.n_layer),
        "--n-embd", str(args.n_embd), "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]
    threads = str(args.threads)  # torch and the BLAS behind NumPy/SciPy (the attacks)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{processes}-process run failed:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed audits per process count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # set by launch(): write results here
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            measured = launch(processes, args, Path(tmp) / f"{processes}.json")
            rounds = measured["rounds"]
            keys = ("wall", "cpu", "scoring", "attacks")
            medians[processes] = {k: statistics.median(r[k] for r in rounds) for k in keys}
            m = medians[processes]
            print(f"{processes} process(es): audit {m['wall']:.2f} s (scoring + gather {m['scoring']:.2f} s, "
                  f"attacks {m['attacks']:.2f} s); CPU time of the busiest process {m['cpu']:.2f} s; "
                  f"median of {len(rounds)}")
    one, two = medians[1], medians[2]
    print(f"\n{args.canaries} canaries, GPT-2 {args.n_layer} layers x {args.n_embd} "
          f"({measured['parameters'] / 1e6:.1f}M parameters), {args.threads} thread(s) per process")
    print(f"2 processes / 1 process: audit wall time {two['wall'] / one['wall']:.2f}, "
          f"scoring {two['scoring'] / one['scoring']:.2f}, attacks {two['attacks'] / one['attacks']:.2f}; "
          f"CPU time of the busiest process {two['cpu'] / one['cpu']:.2f} (the wall ratio on idle cores)")


if __name__ == "__main__":
    main()
