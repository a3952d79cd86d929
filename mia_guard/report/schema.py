"""The report's JSON document: building it from an AuditHistory, validating and loading it.

``report.json`` is what reviewers archive and what the release gate reads, so it is
plain, schema-versioned JSON (format ``"mia_guard.report"``, ``schema_version`` 1)::

    {
      "format": "mia_guard.report", "schema_version": 1,
      "created": "2025-01-01T12:00:00+00:00", "mia_guard_version": "0.1.0",
      "confidence": 0.95,            # level of every interval below
      "fprs": [0.001, 0.01, 0.1],    # FPR levels at which TPR was measured
      "canaries": {"hash", "count", "members", "non_members", "kind", "template", "secret_space_bits"},
      "audits": [                    # one entry per audit, in strictly increasing step order (see audit_entry)
        {"step", "timestamp", "metrics": {attack: AttackMetrics.to_dict()},
         "member_nll", "nonmember_nll", "skipped", "notes", "invalid_canaries", "extras",
         "failed_attacks"?}         # optional: attacks that raised, with the reason
      ],
      "failed_audits": [{"step", "reason"}],   # optional: audits that could not run
      "final": {"step", "strongest_attack", "strongest_by"},   # step: the last audit's
      "gate": GateDecision.to_dict() or null,
      "run_info": {...}              # passed through (DP epsilon, training arguments, ...)
    }

Estimates are ``{"value", "low", "high", "confidence", "note"}`` with ``null`` for values
the data cannot resolve (e.g. TPR at an FPR below 1 / non-members). Per-canary scores
and token statistics stay in the history file; the report holds only figures.
:func:`validate_report` checks every field (:mod:`mia_guard.report.validation`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np

from .._io import CorruptFileError, check_format, is_sealed, unseal_json

if TYPE_CHECKING:  # typing only: `mia-guard gate` must not import torch
    from ..audit.result import AuditHistory, AuditResult
    from ..canaries.canary_set import CanarySet


class GateDecisionRecord(Protocol):
    """What the report needs of a release-gate decision (``mia_guard.gate.GateDecision``)."""

    def to_dict(self) -> dict: ...


REPORT_FORMAT = "mia_guard.report"
REPORT_SCHEMA_VERSION = 1
STRONGEST_BY = "highest AUC point estimate"


# ---------------------------------------------------------------- building


def audit_entry(result: "AuditResult") -> dict:
    """The report's record of one audit: every figure with its interval, no scores or token stats."""
    return {
        "step": int(result.step),
        "timestamp": float(result.timestamp),
        "metrics": {name: m.to_dict() for name, m in result.metrics.items()},
        "member_nll": result.member_nll.to_dict(),
        "nonmember_nll": result.nonmember_nll.to_dict(),
        "skipped": dict(result.skipped),
        "failed_attacks": dict(result.failed_attacks),
        "notes": list(result.notes),
        "invalid_canaries": [int(i) for i in result.invalid_canaries],
        "extras": to_plain(result.extras, f"extras of the audit at step {result.step}"),
    }


def canary_summary(history: "AuditHistory", canaries: "CanarySet | None" = None) -> dict:
    """Count, membership split and (when ``canaries`` is given) template and secret-space size."""
    n_members = int(history.is_member.sum())
    summary = {
        "hash": history.canary_hash,
        "count": int(history.is_member.size),
        "members": n_members,
        "non_members": int(history.is_member.size) - n_members,
        "kind": None,
        "template": None,
        "secret_space_bits": None,
    }
    if canaries is None:
        return summary
    if canaries.content_hash != history.canary_hash:
        raise ValueError(
            f"the canaries given (hash {canaries.content_hash[:12]}...) are not the ones this history audited "
            f"(hash {history.canary_hash[:12]}...); pass the canary file saved with the training run"
        )
    template = canaries.template
    summary.update(
        kind=canaries.kind,
        template=template.name if template is not None else None,
        secret_space_bits=canaries.secret_space_bits,
    )
    return summary


def build_report(
    history: "AuditHistory",
    *,
    canaries: "CanarySet | None" = None,
    decision: GateDecisionRecord | None = None,
    run_info: Mapping[str, Any] | None = None,
) -> dict:
    """The ``report.json`` document for ``history`` (see the module docstring).

    Raises:
        ValueError: the history has no audits, ``canaries`` do not match it, or
            ``run_info`` / extras hold values JSON cannot store.
    """
    from .. import __version__

    final = history.last
    if final is None:
        raise ValueError("the audit history has no audits yet; run Auditor.audit at least once before reporting")
    if run_info is not None and not isinstance(run_info, Mapping):
        raise ValueError(f"run_info must be a dict of JSON-able values, got {type(run_info).__name__}")
    return {
        "format": REPORT_FORMAT,
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mia_guard_version": __version__,
        "confidence": float(history.confidence),
        "fprs": [float(f) for f in history.fprs],
        "canaries": canary_summary(history, canaries),
        "audits": [audit_entry(r) for r in history.results],
        "failed_audits": [dict(f) for f in history.failures],
        "final": {"step": int(final.step), "strongest_attack": final.best_attack(), "strongest_by": STRONGEST_BY},
        "gate": decision.to_dict() if decision is not None else None,
        "run_info": to_plain(dict(run_info or {}), "run_info"),
    }


def to_plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy scalars/arrays turned into Python numbers/lists and non-finite floats into None.

    Raises:
        ValueError: ``obj`` holds something JSON cannot store (``where`` names the container).
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_plain(obj.item(), where)
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist(), where)
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise ValueError(f"{where} has non-string keys {bad[:3]}; JSON objects need string keys")
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, where) for v in obj]
    raise ValueError(f"{where} holds a {type(obj).__name__}, which JSON cannot store; convert it to numbers or text")


# ---------------------------------------------------------------- reading


def validate_report(data: Any, source: str = "report") -> dict:
    """Check that ``data`` is a report this version reads, field by field; returns it unchanged.

    See :mod:`mia_guard.report.validation` for what is checked (types, ranges, intervals,
    step order, counts).

    Raises:
        ValueError: wrong format or schema version, or a malformed field (the message
            names it by path, e.g. ``audits[1].metrics.loss.auc.value``).
    """
    from .validation import check_report_document

    check_format(
        data, fmt=REPORT_FORMAT, version=REPORT_SCHEMA_VERSION, what="report", source=source,
        fix="regenerate it from history.json with `mia-guard report DIR`",
    )
    return check_report_document(data, source)


def load_report(path: str | os.PathLike) -> dict:
    """Read and validate a ``report.json`` (or a directory holding one).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (corrupt or truncated), fails the checksum
            it was written with (edited or damaged), is not a mia_guard report, or has
            another schema version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"report {path} does not exist; write it with `mia-guard report RUN_DIR` (RUN_DIR holds history.json)"
        ) from None
    except OSError as err:
        raise ValueError(f"report {path} cannot be read ({err.strerror or err}); check the path and its permissions") from err
    if is_sealed(raw):  # written with its checksum (mia_guard >= 0.2): verified, never used when edited
        try:
            return validate_report(unseal_json(raw, f"report {path}"), source=f"report {path}")
        except CorruptFileError as err:
            raise CorruptFileError(f"{err}; regenerate it with `mia-guard report RUN_DIR`") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"report {path} is not UTF-8 text ({err}); it is corrupt or not a report") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"report {path} is not valid JSON ({err}); the file is corrupt or truncated: "
            "regenerate it with `mia-guard report RUN_DIR`"
        ) from err
    except RecursionError:
        raise ValueError(
            f"report {path} is nested too deeply to be a mia_guard report; it is corrupt or not a report"
        ) from None
    return validate_report(data, source=f"report {path}")


# ---------------------------------------------------------------- helpers shared by the renderers


def final_audit(report: dict) -> dict:
    """The last audit entry of a validated report."""
    return report["audits"][-1]


def curve_fpr(report: dict) -> float | None:
    """The FPR level the leakage curves show TPR at: 1% when measured, else the smallest FPR
    that the final audit resolves for some attack; ``None`` when none is resolvable."""
    fprs = sorted(float(f) for f in report["fprs"])
    metrics = final_audit(report)["metrics"].values()

    def resolved(fpr: float) -> bool:
        return any(
            (est := m["tpr_at_fpr"].get(repr(fpr))) is not None and est["value"] is not None for m in metrics
        )

    if 0.01 in fprs and resolved(0.01):
        return 0.01
    return next((f for f in fprs if resolved(f)), None)


def pct(rate: float) -> str:
    """``0.001`` -> ``"0.1%"`` (three significant digits)."""
    return f"{rate * 100:.3g}%"


def fmt_estimate(est: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``"0.812 [0.770, 0.850]"``, ``"n/a"`` for unresolvable, ``"0.812 (no interval)"``."""
    if est is None or est.get("value") is None:
        return "n/a"
    value = f"{est['value']:.{digits}f}"
    if est.get("low") is None or est.get("high") is None:
        return f"{value} (no interval)"
    return f"{value} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"
