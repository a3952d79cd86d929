"""AuditResult (one audit) and AuditHistory (the leakage curve), JSON-able and schema-versioned.

On disk a history is an append-only store (:mod:`mia_guard.audit.storage`); ``to_dict`` /
``from_dict`` are the single-document form (schema 1) used in memory and by old files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .._io import check_format, decode_array, encode_array
from ..scoring.token_stats import TokenStats
from ..stats.estimate import Estimate
from ..stats.metrics import AttackMetrics

if TYPE_CHECKING:
    from .storage import HistoryWriter

HISTORY_FORMAT = "mia_guard.history"
#: version of the single-document form (``AuditHistory.to_dict``); saved histories are version 2
HISTORY_SCHEMA_VERSION = 1


@dataclass
class AuditResult:
    """Everything one audit measured.

    Attributes:
        step: training step (optimizer steps) of the audited model.
        metrics: per attack, AUC / TPR@FPR / advantage with intervals.
        scores: per attack, one score per canary ``[N]`` (higher = member; NaN for
            canaries left out because their statistics were not finite).
        member_nll, nonmember_nll: mean per-canary NLL of members / non-members with a CI.
        skipped: attacks that could not run here (a need unmet, too few canaries), with the reason.
        failed_attacks: attacks that raised an error, with the error; the release gate
            fails closed on them (nothing was measured).
        notes: warnings raised during the audit, in words.
        invalid_canaries: indices of canaries with non-finite statistics.
        seconds: wall time of the stages (``scoring``, ``attacks``).
        stats: the TokenStats the attacks read (kept for trajectory / multi-run attacks);
            for a loaded history read from disk on first use (see :meth:`defer_stats`).
        extras: further figure groups (e.g. ``"privacy"``), JSON-able dicts.
        canary_set: the name of the canary set audited, in a run with several named sets
            (``None`` for a run's only set); figures are named ``<set>/...`` after it.
    """

    step: int
    metrics: dict[str, AttackMetrics]
    scores: dict[str, np.ndarray]
    member_nll: Estimate
    nonmember_nll: Estimate
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    invalid_canaries: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    stats: TokenStats | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    failed_attacks: dict[str, str] = field(default_factory=dict)
    canary_set: str | None = None

    def defer_stats(self, load: Callable[[], TokenStats]) -> None:
        """Let :attr:`stats` be read by ``load()`` on first access (a saved history's statistics)."""
        self.__dict__["_stats"] = None
        self.__dict__["_load_stats"] = load

    def best_attack(self) -> str | None:
        """The attack with the highest AUC point estimate (``None`` if no attack ran).

        Its selection-aware figures are in ``extras["best_attack"]``
        (:func:`mia_guard.audit.best.best_of`).
        """
        recorded = self.extras.get("best_attack")
        if recorded:
            return str(recorded["attack"])
        if not self.metrics:
            return None
        return max(self.metrics, key=lambda name: self.metrics[name].auc.value)

    def table(self) -> str:
        """A fixed-width text table: per attack AUC and TPR at each FPR with intervals, advantage."""
        fprs = sorted({f for m in self.metrics.values() for f in m.tpr_at_fpr})
        header = ["attack", "AUC"] + [f"TPR@{_pct(f)}FPR" for f in fprs] + ["advantage"]
        rows = [header]
        unresolved: dict[float, str] = {}
        for name, m in self.metrics.items():
            cells = []
            for f in fprs:
                est = m.tpr_at_fpr[f]
                cells.append(str(est) if est.resolvable else "n/a")
                if not est.resolvable:
                    unresolved[f] = est.note
            rows.append([name, str(m.auc)] + cells + [str(m.advantage)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [f"step {self.step}: member loss {self.member_nll}, non-member loss {self.nonmember_nll}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.metrics:
            level = next(iter(self.metrics.values())).auc.confidence
            lines.append(f"[low, high] = {level:.0%} intervals")
        lines += [f"n/a at {_pct(f)} FPR: {note}" for f, note in unresolved.items()]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        lines += [f"FAILED {name}: {why}" for name, why in self.failed_attacks.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self, include_stats: bool = True) -> dict:
        named = {"canary_set": self.canary_set} if self.canary_set is not None else {}
        return {
            **named,
            "step": self.step,
            "timestamp": self.timestamp,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "scores": {k: encode_array(v.astype(np.float64)) for k, v in self.scores.items()},
            "member_nll": self.member_nll.to_dict(),
            "nonmember_nll": self.nonmember_nll.to_dict(),
            "skipped": self.skipped,
            "failed_attacks": self.failed_attacks,
            "notes": self.notes,
            "invalid_canaries": self.invalid_canaries,
            "seconds": self.seconds,
            "extras": self.extras,
            "stats": self.stats.to_dict() if (include_stats and self.stats is not None) else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "AuditResult":
        return cls(
            step=int(data["step"]),
            timestamp=float(data["timestamp"]),
            metrics={k: AttackMetrics.from_dict(v) for k, v in data["metrics"].items()},
            scores={k: decode_array(v) for k, v in data["scores"].items()},
            member_nll=Estimate.from_dict(data["member_nll"]),
            nonmember_nll=Estimate.from_dict(data["nonmember_nll"]),
            skipped=dict(data["skipped"]),
            failed_attacks=dict(data.get("failed_attacks") or {}),
            notes=list(data["notes"]),
            invalid_canaries=list(data["invalid_canaries"]),
            seconds=dict(data["seconds"]),
            extras=dict(data.get("extras") or {}),
            stats=TokenStats.from_dict(data["stats"]) if data.get("stats") else None,
            canary_set=data.get("canary_set"),
        )


def _get_stats(result: AuditResult) -> TokenStats | None:
    load = result.__dict__.pop("_load_stats", None)
    if load is not None:
        result.__dict__["_stats"] = load()
    return result.__dict__.get("_stats")


def _set_stats(result: AuditResult, value: TokenStats | None) -> None:
    result.__dict__.pop("_load_stats", None)
    result.__dict__["_stats"] = value


# The dataclass field ``stats`` behaves like a plain attribute but may be loaded lazily.
AuditResult.stats = property(_get_stats, _set_stats)  # type: ignore[assignment]


class AuditHistory:
    """The ordered list of audits of one training run (the leakage curve)."""

    def __init__(
        self,
        canary_hash: str,
        is_member: np.ndarray,
        fprs: Sequence[float],
        confidence: float,
        results: Sequence[AuditResult] = (),
        failures: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.canary_hash = canary_hash
        self.is_member = np.asarray(is_member, dtype=bool)
        self.fprs = tuple(fprs)
        self.confidence = confidence
        self.results: list[AuditResult] = list(results)
        check_step_order([r.step for r in self.results])
        #: audits that could not run: ``{"step", "reason"}`` in the order they failed
        self.failures: list[dict[str, Any]] = [
            {"step": int(f["step"]), "reason": str(f["reason"])} for f in failures
        ]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    @property
    def last(self) -> AuditResult | None:
        return self.results[-1] if self.results else None

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.results]

    def append(self, result: AuditResult) -> None:
        if self.results and result.step <= self.results[-1].step:
            when = "the step of" if result.step == self.results[-1].step else "earlier than"
            raise ValueError(
                f"audit at step {result.step} is {when} the last recorded audit (step {self.results[-1].step}); "
                "audit each step once, and use truncate_after(step) when resuming from an earlier checkpoint"
            )
        self.results.append(result)

    def record_failure(self, step: int, reason: str) -> None:
        """Record that the audit at ``step`` could not run (the report lists it; the gate fails
        closed when it is at or after the last audit that ran)."""
        self.failures.append({"step": int(step), "reason": str(reason)})

    def failed_since_last(self) -> list[dict[str, Any]]:
        """Failures at or after the step of the last audit that ran (all of them when none ran)."""
        last = self.last
        return [f for f in self.failures if last is None or f["step"] >= last.step]

    def truncate_after(self, step: int) -> None:
        """Drop audits (and failures) later than ``step`` (resuming from a checkpoint at ``step``)."""
        self.results = [r for r in self.results if r.step <= step]
        self.failures = [f for f in self.failures if f["step"] <= step]

    def curve(self, attack: str, metric: str = "auc", fpr: float | None = None) -> dict[str, np.ndarray]:
        """``{"step", "value", "low", "high"}`` arrays of one metric over the audits that ran ``attack``.

        ``metric`` is ``"auc"``, ``"advantage"`` or ``"tpr"`` (then give ``fpr``).
        """
        rows = []
        for r in self.results:
            m = r.metrics.get(attack)
            if m is None:
                continue
            est = m.tpr_at_fpr[fpr] if metric == "tpr" else getattr(m, metric)
            rows.append((r.step, est.value, est.low, est.high))
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return {"step": arr[:, 0], "value": arr[:, 1], "low": arr[:, 2], "high": arr[:, 3]}

    # ------------------------------------------------------------------ files
    def to_dict(self, include_stats: bool = True) -> dict:
        return {
            "format": HISTORY_FORMAT,
            "schema_version": HISTORY_SCHEMA_VERSION,
            "canary_hash": self.canary_hash,
            "is_member": encode_array(self.is_member),
            "fprs": list(self.fprs),
            "confidence": self.confidence,
            "results": [r.to_dict(include_stats) for r in self.results],
            "failed_audits": [dict(f) for f in self.failures],
        }

    def save(self, path: str | os.PathLike, include_stats: bool = True) -> Path:
        """Write the history to ``path`` as a new append-only store (manifest at ``path``, one
        checksummed file per audit beside it; see :mod:`mia_guard.audit.storage`), replacing
        what was there. A training run appends to its store audit by audit instead
        (:meth:`store`)."""
        results = self.results if include_stats else [dataclasses.replace(r, stats=None) for r in self.results]
        return self._create_store(path, results).path

    def store(self, path: str | os.PathLike) -> "HistoryWriter":
        """A new store at ``path`` holding this history; append later audits with the returned
        :class:`~mia_guard.audit.storage.HistoryWriter`."""
        return self._create_store(path, self.results)

    def _create_store(self, path: str | os.PathLike, results: Sequence[AuditResult]) -> "HistoryWriter":
        from .storage import HistoryWriter

        return HistoryWriter.create(path, self.canary_hash, self.is_member, self.fprs, self.confidence, results,
                                    self.failures)

    @classmethod
    def from_dict(cls, data: dict, source: str = "history") -> "AuditHistory":
        check_format(data, fmt=HISTORY_FORMAT, version=HISTORY_SCHEMA_VERSION, what="audit history", source=source)
        try:
            return cls(
                data["canary_hash"],
                decode_array(data["is_member"]),
                data["fprs"],
                data["confidence"],
                [AuditResult.from_dict(r) for r in data["results"]],
                data.get("failed_audits") or [],
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source} is malformed ({err!r})") from err
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AuditHistory":
        """Read a saved history (or an old single-file ``history.json``); every file is verified
        against its checksum, token statistics when first used. See
        :func:`mia_guard.audit.storage.read_history` for the errors."""
        from .storage import read_history

        stored = read_history(path)
        if stored.legacy is not None:
            return cls.from_dict(stored.legacy, source=str(path))
        results = []
        for figures, read_stats in stored.audits:
            result = AuditResult.from_dict({**figures, "stats": None})
            if read_stats is not None:
                result.defer_stats(lambda read=read_stats: TokenStats.from_dict(read()))
            results.append(result)
        try:
            return cls(stored.canary_hash, stored.is_member, stored.fprs, stored.confidence, results, stored.failures)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err


def check_step_order(steps: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``steps`` strictly increase: the curve, the step-0 reference and the
    final audit the gate judges are all read from the order of the audits."""
    for earlier, later in zip(steps, steps[1:]):
        if later <= earlier:
            raise ValueError(
                f"the audits are not in increasing step order (step {later} follows step {earlier}; steps "
                f"{list(steps)[:10]}); the history was edited or merged from several runs: regenerate it"
            )


def _pct(fpr: float) -> str:
    return f"{fpr * 100:g}%"
