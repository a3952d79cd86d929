"""``mia-guard demo``: train a small GPT-2 on the Python stdlib with planted credentials and watch it leak."""

from __future__ import annotations

import argparse

from ..cli import InputError
from ._training_args import add_training_arguments, training_config_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small GPT-2 with planted credential canaries and audit it every N steps",
        description="Builds a byte-level GPT-2, inserts credential canaries into chunks of the Python standard "
        "library's sources, trains it with the Hugging Face Trainer, prints a leakage table at every audit, "
        "writes TensorBoard logs and a report, and judges the final model with the bundled example release "
        "policy. Nothing is downloaded; the defaults take about 75 s of CPU time (measured: 73 s CPU, 185 s "
        "wall on a shared 2-core machine).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(parser, every=100, every_help="audit every this many steps", output_dir="mia_demo")
    parser.add_argument("--n-layer", type=int, default=2, help="GPT-2 layers")
    parser.add_argument("--n-embd", type=int, default=64, help="GPT-2 width")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(n_layer=args.n_layer, n_embd=args.n_embd, **training_config_kwargs(args))
    except ValueError as err:
        raise InputError(str(err)) from err
    outcome = run_demo(config)
    print(f"\ndone in {outcome.seconds['total']:.0f} s ({outcome.seconds['train']:.0f} s training with audits)")
    return 0
