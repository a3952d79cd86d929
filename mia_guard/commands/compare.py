"""``mia-guard compare``: the demo trained under each defense; a leakage vs utility table, plot and logs."""

from __future__ import annotations

import argparse

from ..cli import InputError
from ._training_args import add_training_arguments, training_config_kwargs


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.compare_defenses import DEFENSES, OUTPUT_SETTINGS  # imports no torch

    parser = subparsers.add_parser(
        "compare",
        help="train the demo under each defense and compare leakage against utility",
        description="Trains the demo's byte-level GPT-2 (credential canaries in Python stdlib sources) once per "
        "defense, audits every run the same way, and prints the best attack's AUC and TPR@1%%FPR, the one-run "
        "epsilon lower bound and the held-out perplexity, each with its interval. The no-defense model is also "
        "audited through output perturbations an API could apply, and the goldfish run on its supervised and "
        "dropped tokens. Writes comparison.{json,md}, leakage_utility.png and one TensorBoard run per row under "
        "<output-dir>/logs. The defaults take about eight minutes on two CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--defenses", type=_names, default=list(DEFENSES),
        help=f"comma-separated subset of: {','.join(DEFENSES)}",
    )
    parser.add_argument(
        "--output-settings", type=_names, default=list(OUTPUT_SETTINGS),
        help=f"output perturbations audited on the 'none' model, comma-separated subset of: "
        f"{','.join(OUTPUT_SETTINGS)} ('' for none)",
    )
    add_training_arguments(
        parser, every=None, every_help="audit every this many steps (default: steps/2)", output_dir="mia_compare"
    )
    parser.add_argument("--corpus-chunks", type=int, default=2000, help="120-character stdlib chunks to train on")
    parser.add_argument("--heldout-chunks", type=int, default=200, help="held-out chunks for the perplexity")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare import CompareConfig, run_comparison

    try:
        config = CompareConfig(
            defenses=args.defenses,
            output_settings=args.output_settings,
            corpus_chunks=args.corpus_chunks,
            heldout_chunks=args.heldout_chunks,
            **training_config_kwargs(args),
        )
    except ValueError as err:
        raise InputError(str(err)) from err
    outcome = run_comparison(config)
    print(f"\ndone in {outcome.seconds['total']:.0f} s (process CPU time {outcome.seconds['cpu']:.0f} s)")
    return 0
