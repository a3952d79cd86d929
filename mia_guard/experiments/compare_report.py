"""The files of ``mia-guard compare``: the leakage-utility table (text, Markdown, JSON) and its plot.

``comparison.json`` (format ``mia_guard.comparison``, schema version 1) holds the
configuration, the wall and CPU seconds and one record per row
(:meth:`ComparisonRow.to_dict`; estimates as ``value/low/high``
dicts, ``null`` for NaN). Files are written atomically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, check_format, read_json
from ..stats.estimate import Estimate

COMPARISON_FORMAT = "mia_guard.comparison"
COMPARISON_SCHEMA_VERSION = 1
_MARKERS = {"trained": "o", "output": "s", "positions": "^"}


@dataclass
class ComparisonRow:
    """One row of the leakage-utility table.

    Attributes:
        name: row id (a defense name, ``none+<setting>``, ``goldfish_supervised`` / ``_dropped``);
            also its TensorBoard run and ``runs/`` directory.
        label: the row in words.
        kind: ``"trained"`` (a defense), ``"output"`` (an API view of ``none``) or
            ``"positions"`` (a goldfish token subset).
        best_attack: the attack with the highest AUC at the final audit.
        auc: its AUC with the audit's interval (DeLong; per-fold t interval for cross-fitted attacks).
        tpr: its TPR at :data:`TABLE_FPR` with the Clopper-Pearson interval.
        epsilon_lb: the one-run ε lower bound (a one-sided bound at ``confidence``).
        epsilon_lb_guarantee: ``"theorem"`` or ``"heuristic"`` (see :mod:`mia_guard.analyses.privacy`).
        dp_epsilon: ε the DP accountant guarantees (DP rows only), at the same δ.
        perplexity: held-out perplexity with its interval.
        n_canaries: canaries the final audit evaluated.
        seconds: wall time of the row (training with audits, or the extra audits).
        cpu_seconds: process CPU time of the same (all threads; unlike wall time, barely
            changed by other processes on a shared machine).
        notes: what the defense did, and audit caveats.
    """

    name: str
    label: str
    kind: str
    best_attack: str | None
    auc: Estimate
    tpr: Estimate
    epsilon_lb: float | None
    epsilon_lb_guarantee: str | None
    dp_epsilon: float | None
    perplexity: Estimate
    n_canaries: int
    seconds: float
    cpu_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "label": self.label, "kind": self.kind, "best_attack": self.best_attack,
            "auc": self.auc.to_dict(), "tpr": self.tpr.to_dict(), "epsilon_lb": self.epsilon_lb,
            "epsilon_lb_guarantee": self.epsilon_lb_guarantee, "dp_epsilon": self.dp_epsilon,
            "perplexity": self.perplexity.to_dict(), "n_canaries": self.n_canaries,
            "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ComparisonRow":
        return cls(**{
            **data,
            "auc": Estimate.from_dict(data["auc"]),
            "tpr": Estimate.from_dict(data["tpr"]),
            "perplexity": Estimate.from_dict(data["perplexity"]),
        })


def _estimate(est: Estimate, digits: int = 3) -> str:
    if not est.resolvable:
        return "n/a"
    if math.isnan(est.low) or math.isnan(est.high):
        return f"{est.value:.{digits}f}"
    return f"{est.value:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"


def _epsilon_lb(row: "ComparisonRow") -> str:
    if row.epsilon_lb is None:
        return "n/a"
    mark = "" if row.epsilon_lb_guarantee == "theorem" else "*"
    return f">= {row.epsilon_lb:.2f}{mark}"


def table_cells(rows: Sequence[ComparisonRow], confidence: float) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table (one list of strings per row)."""
    level = f"{confidence:.0%}"
    header = [
        "defense", "best attack", f"AUC [{level} CI]", f"TPR@1%FPR [{level} CI]", "eps LB (one-run)",
        "DP eps", f"held-out ppl [{level} CI]", "CPU s",
    ]
    cells = [
        [
            row.label, row.best_attack or "-", _estimate(row.auc), _estimate(row.tpr), _epsilon_lb(row),
            f"{row.dp_epsilon:.2f}" if row.dp_epsilon is not None else "-", _estimate(row.perplexity, 2),
            f"{row.cpu_seconds:.0f}",
        ]
        for row in rows
    ]
    return header, cells


def _footnotes(rows: Sequence[ComparisonRow], confidence: float) -> list[str]:
    lines = [
        f"AUC and TPR of the attack with the highest AUC at the final audit; intervals at {confidence:.0%} "
        "(AUC: DeLong, or for cross-fitted attacks a corrected t interval over folds; TPR: Clopper-Pearson). "
        "eps LB: one-run lower bound (Steinke, Nasr & Jagielski 2023), itself a "
        f"{confidence:.0%} one-sided bound; * = heuristic (cross-fitted attack), not the theorem's guarantee. "
        "DP eps: the accountant's guarantee at the same delta. Perplexity per byte token on held-out stdlib "
        "chunks (t-interval over chunks). CPU s: process CPU time of the row (training and audits).",
    ]
    lines += [f"{row.name}: {note}" for row in rows for note in row.notes]
    return lines


def comparison_table(rows: Sequence[ComparisonRow], confidence: float = 0.95) -> str:
    """The table as fixed-width text, with its footnotes."""
    header, cells = table_cells(rows, confidence)
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines + [""] + _footnotes(rows, confidence))


def comparison_markdown(rows: Sequence[ComparisonRow], confidence: float, seconds: Mapping[str, float]) -> str:
    """The table as a Markdown document (``comparison.md``)."""
    header, cells = table_cells(rows, confidence)
    lines = ["# Defense comparison: leakage vs utility", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells]
    lines += ["", *(f"- {note}" for note in _footnotes(rows, confidence)), ""]
    lines.append(f"Wall time {seconds['total']:.0f} s, process CPU time {seconds['cpu']:.0f} s.")
    return "\n".join(lines) + "\n"


def leakage_utility_png(rows: Sequence[ComparisonRow], confidence: float = 0.95) -> bytes:
    """Best attack's AUC (left) and TPR@1%FPR (right) against held-out perplexity, with interval bars."""
    from ..report.plots import _colors, _new_figure, _png

    fig, (ax_auc, ax_tpr) = _new_figure(12, 5, ncols=2)
    colors = _colors(len(rows))
    for ax, read, chance, title in (
        (ax_auc, lambda r: r.auc, 0.5, "best attack's AUC"),
        (ax_tpr, lambda r: r.tpr, 0.01, "its TPR at 1% FPR"),
    ):
        for row, color in zip(rows, colors):
            y, x = read(row), row.perplexity
            if not (y.resolvable and x.resolvable):
                continue
            ax.errorbar(
                x.value, y.value, xerr=_bar(x), yerr=_bar(y), fmt=_MARKERS.get(row.kind, "o"), color=color,
                capsize=3, label=row.label,
            )
            ax.annotate(row.name, (x.value, y.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"held-out perplexity (per byte), {confidence:.0%} CI")
        ax.set_ylabel(f"{title}, {confidence:.0%} CI")
        lows = [read(r).low for r in rows if not math.isnan(read(r).low)]
        ax.set_ylim(max(0.0, min([chance - 0.1, *lows]) - 0.02), 1.02)
        values = [r.perplexity.value for r in rows if r.perplexity.resolvable]
        if values and max(values) / min(values) > 5:
            ax.set_xscale("log")
        if not ax.lines:
            ax.text(0.5, 0.5, "not resolvable with these canaries\n(TPR at 1% FPR needs >= 100 non-members)",
                    transform=ax.transAxes, ha="center", va="center")
        ax.grid(alpha=0.3)
    ax_auc.set_title("leakage vs utility (chance: dotted)")
    from matplotlib.lines import Line2D

    kinds = {"trained": "trained defense", "output": "API view of 'none'", "positions": "goldfish token subset"}
    present = [k for k in kinds if any(r.kind == k for r in rows)]
    ax_auc.legend(
        [Line2D([], [], marker=_MARKERS[k], color="grey", linestyle="") for k in present],
        [kinds[k] for k in present], fontsize=7, loc="lower right",
    )
    return _png(fig)


def _bar(est: Estimate) -> Any:
    if math.isnan(est.low) or math.isnan(est.high):
        return None
    return [[max(est.value - est.low, 0.0)], [max(est.high - est.value, 0.0)]]


def write_comparison(
    rows: Sequence[ComparisonRow], config: Any, seconds: Mapping[str, float]
) -> dict[str, Path]:
    """Write ``comparison.json``, ``comparison.md`` and ``leakage_utility.png`` into ``config.output_dir``
    (``config``: the run's :class:`~mia_guard.experiments.compare.CompareConfig`)."""
    out = config.output_dir
    settings = {k: str(v) if isinstance(v, Path) else (list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in asdict(config).items()}
    record = {
        "format": COMPARISON_FORMAT,
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "config": settings,
        "seconds": dict(seconds),
        "rows": [row.to_dict() for row in rows],
    }
    return {
        "json": atomic_write_json(out / "comparison.json", record),
        "markdown": atomic_write_text(out / "comparison.md", comparison_markdown(rows, config.confidence, seconds)),
        "png": atomic_write_bytes(out / "leakage_utility.png", leakage_utility_png(rows, config.confidence)),
    }


def load_comparison(path: str | Path) -> tuple[dict, list[ComparisonRow]]:
    """``(record, rows)`` of a ``comparison.json``; refuses other files and schema versions."""
    data = read_json(path, "comparison")
    check_format(data, fmt=COMPARISON_FORMAT, version=COMPARISON_SCHEMA_VERSION, what="comparison", source=path)
    return data, [ComparisonRow.from_dict(r) for r in data["rows"]]
