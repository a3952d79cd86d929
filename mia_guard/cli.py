"""The ``mia-guard`` command line: one subcommand per module in :mod:`mia_guard.commands`.

Exit codes: 0 success (for ``gate``: release), 1 blocked (``gate``), 2 bad or missing
input (the message says what to fix). Each command module defines
``register(subparsers)``, which adds its parser and sets ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMAND_MODULES = ("audit", "compare", "demo", "gate", "multirun", "plan", "report")

EXIT_OK = 0
EXIT_BLOCKED = 1
EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """Bad or missing user input; the message tells the user what to do. Exits with 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mia-guard", description="Training-time membership-inference audits and release gates."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mia_guard.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (InputError, FileNotFoundError, ValueError) as err:
        print(f"mia-guard {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
