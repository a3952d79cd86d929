"""``mia-guard demo``: train a small GPT-2 on the Python stdlib with planted credentials and watch it leak."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small GPT-2 with planted credential canaries and audit it every N steps",
        description="Builds a byte-level GPT-2, inserts credential canaries into chunks of the Python standard "
        "library's sources, trains it with the Hugging Face Trainer, prints a leakage table at every audit, "
        "writes TensorBoard logs and a report, and judges the final model with the bundled example release "
        "policy. Nothing is downloaded; the defaults take about a minute on two CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps")
    parser.add_argument("--every", type=int, default=100, help="audit every this many steps")
    parser.add_argument("--canaries", type=int, default=256, help="number of credential canaries (about half inserted)")
    parser.add_argument("--repetitions", type=int, default=8, help="times each member canary is inserted")
    parser.add_argument("--n-layer", type=int, default=2, help="GPT-2 layers")
    parser.add_argument("--n-embd", type=int, default=64, help="GPT-2 width")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    parser.add_argument("--output-dir", type=Path, default=Path("mia_demo"), help="where to write everything")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads when training on the CPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            steps=args.steps,
            every=args.every,
            canaries=args.canaries,
            repetitions=args.repetitions,
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            device=args.device,
            output_dir=args.output_dir,
            seed=args.seed,
            threads=args.threads,
            progress=not args.no_progress,
        )
    except ValueError as err:
        raise InputError(str(err)) from err
    outcome = run_demo(config)
    print(f"\ndone in {outcome.seconds['total']:.0f} s ({outcome.seconds['train']:.0f} s training with audits)")
    return 0
