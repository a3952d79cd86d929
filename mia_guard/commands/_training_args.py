"""Flags shared by the commands that train the demo model (``demo``, ``compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_training_arguments(
    parser: argparse.ArgumentParser, *, every: int | None, every_help: str, output_dir: str
) -> None:
    """Add --steps, --every, --canaries, --repetitions, --device, --output-dir, --seed,
    --threads and --no-progress with the demo's defaults."""
    parser.add_argument("--steps", type=int, default=800, help="optimizer steps (of every run)")
    parser.add_argument("--every", type=int, default=every, help=every_help)
    parser.add_argument("--canaries", type=int, default=256, help="credential canaries (about half inserted)")
    parser.add_argument("--repetitions", type=int, default=8, help="times each member canary is inserted")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    parser.add_argument("--output-dir", type=Path, default=Path(output_dir), help="where to write everything")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads when training on the CPU")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def training_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the flags of :func:`add_training_arguments` set."""
    return {
        "steps": args.steps,
        "every": args.every,
        "canaries": args.canaries,
        "repetitions": args.repetitions,
        "device": args.device,
        "output_dir": args.output_dir,
        "seed": args.seed,
        "threads": args.threads,
        "progress": not args.no_progress,
    }
