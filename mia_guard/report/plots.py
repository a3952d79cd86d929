"""The report's figures as PNG bytes: leakage curves over training steps and the final ROC.

matplotlib is imported lazily and drawn through its object API on an Agg canvas, so
nothing here touches pyplot's global state or the user's interactive backend.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from ..stats.roc import roc_curve
from .schema import curve_fpr, pct

if TYPE_CHECKING:
    from ..audit.result import AuditHistory

_DPI = 110


def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _series(report: dict, attack: str, read) -> np.ndarray:
    """``[K, 4]`` rows ``(step, value, low, high)`` over the audits that ran ``attack`` (NaN for null)."""
    rows = []
    for entry in report["audits"]:
        metrics = entry["metrics"].get(attack)
        if metrics is None:
            continue
        est = read(metrics) or {}
        rows.append([entry["step"]] + [math.nan if est.get(k) is None else est[k] for k in ("value", "low", "high")])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def leakage_png(report: dict) -> bytes:
    """Per attack, AUC and TPR at :func:`curve_fpr` over steps with interval bands.

    Left panel: AUC (chance 0.5). Right panel: TPR at the chosen FPR (chance = that FPR);
    unresolvable points are gaps. Bands are the report's confidence intervals.
    """
    fig, (ax_auc, ax_tpr) = _new_figure(11, 4.2, ncols=2)
    attacks = list(dict.fromkeys(a for entry in report["audits"] for a in entry["metrics"]))
    fpr = curve_fpr(report)
    level = f"{report['confidence']:.0%}"
    colors = _colors(len(attacks))
    for attack, color in zip(attacks, colors):
        panels = [(ax_auc, lambda m: m["auc"])]
        if fpr is not None:
            panels.append((ax_tpr, lambda m: m["tpr_at_fpr"].get(repr(fpr))))
        for ax, read in panels:
            s = _series(report, attack, read)
            if not len(s):
                continue
            ax.fill_between(s[:, 0], s[:, 2], s[:, 3], color=color, alpha=0.18, linewidth=0)
            ax.errorbar(
                s[:, 0], s[:, 1], yerr=_yerr(s), color=color, marker="o", markersize=3, capsize=2,
                linewidth=1.4, label=attack,
            )
    ax_auc.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax_auc.set(title=f"AUC with {level} intervals", xlabel="training step", ylabel="AUC", ylim=(0.0, 1.02))
    if fpr is not None:
        ax_tpr.axhline(fpr, color="grey", linestyle=":", linewidth=1, label="chance")
        ax_tpr.set(
            title=f"TPR at {pct(fpr)} FPR with {level} intervals", xlabel="training step",
            ylabel=f"TPR at {pct(fpr)} FPR", ylim=(0.0, 1.02),
        )
    else:
        ax_tpr.text(0.5, 0.5, "no FPR level is resolvable\nwith these canaries", ha="center", va="center",
                    transform=ax_tpr.transAxes)
        ax_tpr.set_axis_off()
    ax_auc.legend(fontsize="small", loc="lower right")
    fig.suptitle("Membership leakage over training (higher = more memorization)")
    return _png(fig)


def _yerr(s: np.ndarray) -> np.ndarray:
    """Errorbar extents (non-negative; 0 where the interval is missing)."""
    below = np.nan_to_num(s[:, 1] - s[:, 2], nan=0.0).clip(min=0.0)
    above = np.nan_to_num(s[:, 3] - s[:, 1], nan=0.0).clip(min=0.0)
    return np.vstack([below, above])


def roc_png(history: "AuditHistory") -> bytes:
    """Log-log ROC of every attack at the final audit, from the stored per-canary scores.

    Canaries with NaN scores (non-finite statistics) are left out, as in the metrics. The
    dotted diagonal is chance; the dashed vertical line is the lowest FPR the
    non-members can resolve (1 / non-members): the curve left of it says nothing.
    """
    final = history.last
    if final is None:
        raise ValueError("the audit history has no audits; nothing to plot")
    fig, (ax,) = _new_figure(5.6, 5.0)
    colors = _colors(len(final.scores))
    lowest = 1.0
    for (attack, scores), color in zip(final.scores.items(), colors):
        valid = ~np.isnan(scores)
        labels = history.is_member[valid]
        n_neg, n_pos = int((~labels).sum()), int(labels.sum())
        if n_neg == 0 or n_pos == 0:
            continue
        fpr, tpr, _ = roc_curve(scores[valid], labels)
        floor_x, floor_y = 0.5 / n_neg, 0.5 / n_pos
        lowest = min(lowest, floor_x, floor_y)
        metrics = final.metrics.get(attack)
        label = f"{attack} (AUC {metrics.auc.value:.3f})" if metrics is not None else attack
        # log axes cannot show 0: draw zero rates at half the smallest non-zero rate
        ax.plot(np.maximum(fpr, floor_x), np.maximum(tpr, floor_y), color=color, linewidth=1.4, label=label)
        resolvable = 1.0 / n_neg  # the same for every attack: invalid canaries are NaN in all of them
    grid = np.geomspace(lowest, 1.0, 50)
    ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    if lowest < 1.0:
        ax.axvline(resolvable, color="black", linestyle="--", linewidth=0.8, label="1 / non-members")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlim=(lowest, 1.0), ylim=(lowest, 1.05), xlabel="false-positive rate", ylabel="true-positive rate",
           title=f"ROC at step {final.step} (log-log)")
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
