"""``mia-guard gate``: judge a report against a release policy; the exit code is the verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="decide from a report whether a model may be released (exit 0 release, 1 blocked, 2 cannot decide)",
        description="Judge the final audit of REPORT against a release policy on the bounds of its confidence "
        "intervals. Exit codes: 0 release; 1 blocked (also when a check is inconclusive and the policy blocks "
        "on it, and always when something was not measured or the canaries are too few); 2 cannot decide: "
        "missing, corrupt or malformed report (the message names the bad field), invalid policy. The gate "
        "fails closed: any error exits 2. See docs/gate.md.",
    )
    parser.add_argument(
        "report", type=Path,
        help="report.json written by `mia-guard report` or a training run (or its directory); a run with several "
        "canary sets writes a report set, judged set by set: any blocked set blocks",
    )
    parser.add_argument(
        "--policy", required=True, type=Path,
        help="release policy TOML (a commented example ships as mia_guard/data/release_policy.toml)",
    )
    parser.add_argument("--json", action="store_true", help="print the decision as JSON instead of the explanation")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import InputError

    try:
        text, exit_code = _decide(args)
    except (InputError, FileNotFoundError, ValueError):
        raise
    except RecursionError:
        raise InputError("the report or policy is nested too deeply to be judged; it is corrupt") from None
    except Exception as err:  # the gate fails closed: whatever goes wrong, exit 2 and say what
        raise InputError(
            f"cannot decide ({type(err).__name__}: {err}); the gate fails closed. Check the report and the policy, "
            "and report this as a mia_guard bug if both are files mia_guard wrote"
        ) from err
    print(text)
    return exit_code


def _decide(args: argparse.Namespace) -> tuple[str, int]:
    from .._io import read_json
    from ..gate import ReleasePolicy, evaluate_report
    from ..gate.combined import evaluate_report_set
    from ..report.report_set import is_report_set
    from ..report.schema import load_report  # not ..report: the gate must not import torch

    policy = ReleasePolicy.from_toml(args.policy)
    path = args.report / "report.json" if args.report.is_dir() else args.report
    try:
        peek = read_json(path, "report")
    except (OSError, ValueError):
        peek = None  # load_report below says what is wrong with it
    if is_report_set(peek):  # several canary sets: every set judged, any block blocks
        decision = evaluate_report_set(policy, path)
    else:
        decision = evaluate_report(policy, load_report(path))
    return (json.dumps(decision.to_dict(), indent=2) if args.json else decision.explain()), decision.exit_code
