"""One report for a run that audits several canary sets (torch-free; the gate reads it).

A run with named canary sets (``MIAAuditCallback({"credentials": a, "texts": b})``)
writes each set's full report in its own directory (``<output_dir>/<set>/report.json``,
``report.md``, plots: the single-set report, unchanged) and, in ``<output_dir>``, a
report *set* that covers them all:

* ``report.json``, format ``"mia_guard.report_set"``::

      {"format": "mia_guard.report_set", "schema_version": 1, "created": "...",
       "sets": {"credentials": "credentials/report.json", "texts": "texts/report.json"},
       "gate": {...}}          # the combined decision, when the run had a policy

  ``sets`` maps each set name to its report, relative to this file;
* ``report.md``: one row per set (final step, strongest attack and its AUC, verdict) and
  the combined verdict, linking each set's report.

``mia-guard gate <output_dir>/report.json --policy p.toml`` judges every set's final
audit against the policy and blocks when any set blocks
(:func:`mia_guard.gate.combined.evaluate_report_set`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any, Mapping

from .._io import atomic_write_json, atomic_write_text, check_format, read_json

REPORT_SET_FORMAT = "mia_guard.report_set"
REPORT_SET_SCHEMA_VERSION = 1
#: A canary set's name: it becomes a directory and a tag segment (``mia/<set>/...``).
SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_set_name(name: Any) -> str:
    """``name`` if it can name a canary set (letters, digits, ``_ . -``; a directory and a tag segment)."""
    if not isinstance(name, str) or not SET_NAME.match(name) or name in ("mia", "report.json"):
        raise ValueError(
            f"a canary set name must be 1-64 letters, digits, '_', '.' or '-' starting with a letter or digit "
            f"(it names a directory and the mia/<set>/... figures), got {name!r}"
        )
    return name


def is_report_set(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("format") == REPORT_SET_FORMAT


def write_report_set(directory: str | os.PathLike, reports: Mapping[str, Path], decision: Any = None) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` of a report set into ``directory``.

    Args:
        directory: the run's audit directory (each set's report lies below it).
        reports: set name -> that set's ``report.json``.
        decision: the combined gate decision (``GateDecision``), or ``None``.

    Returns:
        ``{"json": ..., "markdown": ...}`` paths written.
    """
    from .schema import load_report

    directory = Path(directory)
    index = {
        "format": REPORT_SET_FORMAT,
        "schema_version": REPORT_SET_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sets": {name: os.path.relpath(path, directory) for name, path in reports.items()},
    }
    if decision is not None:
        index["gate"] = decision.to_dict()
    rows = []
    for name, path in reports.items():
        report = load_report(path)
        final = report["audits"][-1]
        best = report["final"].get("strongest_attack")
        auc = final["metrics"][best]["auc"] if best else None
        verdict = (report.get("gate") or {}).get("verdict", "-")
        auc_text = f"{auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]" if auc and auc.get("value") is not None \
            else "n/a"
        link = index["sets"][name].replace(os.sep, "/")
        rows.append(f"| [{name}]({link[:-len('.json')]}.md) | {final['step']} | {best or '-'} | {auc_text} | {verdict} |")
    lines = [
        "# mia_guard audit report: several canary sets",
        "",
        "Each canary set was audited separately (its own attacks, intervals and report); the release gate "
        "blocks when any set blocks.",
        "",
        "| canary set | final step | strongest attack | its AUC | gate |",
        "|---|---|---|---|---|",
        *rows,
    ]
    if decision is not None:
        lines += ["", f"**Release gate (all sets): {decision.verdict}**, exit code {decision.exit_code}", ""]
        lines += [f"- {reason}" for reason in decision.reasons]
    paths = {"json": directory / "report.json", "markdown": directory / "report.md"}
    atomic_write_text(paths["markdown"], "\n".join(lines) + "\n")
    atomic_write_json(paths["json"], index)
    return paths


def load_report_set(path: str | os.PathLike) -> tuple[dict, dict[str, dict]]:
    """The report set at ``path`` (a ``report.json`` or its directory) and every set's
    report, loaded and validated: ``(index, {name: report})``.

    Raises:
        FileNotFoundError: the index or a set's report is missing.
        ValueError: not a report set, a bad set name or path, or a set's report is invalid.
    """
    from .schema import load_report

    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    index = check_format(
        read_json(path, "report set"), fmt=REPORT_SET_FORMAT, version=REPORT_SET_SCHEMA_VERSION,
        what="report set", source=path, fix="rewrite it by running the training (or `mia-guard report`) again",
    )
    sets = index.get("sets")
    if not isinstance(sets, Mapping) or not sets:
        raise ValueError(f"{path}: 'sets' must map canary set names to their report files")
    reports = {}
    for name, relative in sets.items():
        check_set_name(name)
        if not isinstance(relative, str) or os.path.isabs(relative) or ".." in Path(relative).parts:
            raise ValueError(f"{path}: sets[{name!r}] must be a relative path below the report set, got {relative!r}")
        reports[name] = load_report(path.parent / relative)
    return index, reports
