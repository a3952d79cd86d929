"""``mia-guard report``: (re)write the report files of a run from its ``history.json``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import InputError

HISTORY_FILE = "history.json"
CANARY_FILE = "canaries.json"
RUN_INFO_FILE = "run_info.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.json, report.md, leakage.png and roc.png of a run's audits",
        description=f"Read DIR/{HISTORY_FILE} (the audit history a training run wrote) and (re)write the "
        f"report files into DIR. DIR/{CANARY_FILE} and DIR/{RUN_INFO_FILE} are included when present; "
        "without a run-info file, the run information of an existing DIR/report.json is kept.",
    )
    parser.add_argument("directory", type=Path, help=f"a run's mia output directory holding {HISTORY_FILE}")
    parser.add_argument("--policy", type=Path, help="release policy TOML: include the gate decision in the report")
    parser.add_argument("--canaries", type=Path, help=f"canary file (default: DIR/{CANARY_FILE} when present)")
    parser.add_argument(
        "--run-info", type=Path,
        help=f"JSON object of run facts (default: DIR/{RUN_INFO_FILE}, else the run_info of DIR/report.json)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..audit.result import AuditHistory
    from ..canaries.canary_set import CanarySet
    from ..gate import ReleasePolicy, evaluate_result
    from ..report.files import write_report

    directory: Path = args.directory
    history_path = directory / HISTORY_FILE
    if not history_path.is_file():
        raise InputError(
            f"{history_path} does not exist; pass the output directory of an audited run (the one holding {HISTORY_FILE})"
        )
    policy = ReleasePolicy.from_toml(args.policy) if args.policy else None
    history = AuditHistory.load(history_path)
    if history.last is None:
        raise InputError(f"{history_path} holds no audits yet; nothing to report")
    canary_path = args.canaries or (directory / CANARY_FILE if (directory / CANARY_FILE).is_file() else None)
    canaries = CanarySet.load(canary_path) if canary_path else None
    run_info_path = args.run_info or (directory / RUN_INFO_FILE if (directory / RUN_INFO_FILE).is_file() else None)
    run_info = _read_run_info(run_info_path) if run_info_path else _previous_run_info(directory / "report.json")
    decision = evaluate_result(policy, history.last) if policy else None
    paths = write_report(history, directory, canaries=canaries, decision=decision, run_info=run_info)
    for path in paths.values():
        print(f"wrote {path}")
    if decision is not None:
        print(decision.explain())
    return 0


def _read_run_info(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"run-info file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"run-info file {path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise InputError(f"run-info file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _previous_run_info(report_path: Path) -> dict | None:
    """The run information of the report being replaced (the training run wrote it), if readable."""
    from ..report.schema import load_report

    if not report_path.is_file():
        return None
    try:
        return load_report(report_path).get("run_info") or None
    except ValueError as err:
        print(f"mia-guard report: note: not keeping run information from {report_path}: {err}", file=sys.stderr)
        return None
