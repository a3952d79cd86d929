"""Per-position leakage profile: where in a canary the membership signal sits, and how positions co-vary.

For templated canaries, TokenStats column ``j`` is the ``j``-th secret token of every
canary (docs/architecture.md, "Conventions"), so one can ask, position by position:

- **How much does this token alone reveal?** The AUC of the per-token statistic at
  position ``j`` for members against non-members, with a DeLong interval
  (:func:`mia_guard.stats.roc.auc_with_ci`). The statistic is oriented so that higher =
  better predicted (member-like): ``confidence`` and ``top1`` as they are, ``nll`` and
  ``entropy`` negated.
- **Are the positions separate evidence?** The Pearson correlation matrix of the
  statistic between positions, separately for members and for non-members. Strong
  positive correlation means the tokens move together (a canary-level nuisance, or a
  member the model has locked onto), so averaging them — the loss attack — gains little
  over one token, while the correlation-aware sequence LiRA can cancel the shared part.
  ``effective_positions = P² / Σ_jk ρ_jk²`` summarises this: about ``P`` for independent
  positions, about 1 when all move together.

Together they explain why the correlation-aware attack beats the loss attack (a signal
that grows along the secret, against correlated noise) or does not (a flat signal on
nearly independent positions, where the mean is already the best combination).

For text or token canaries column ``j`` is the ``j``-th scored token of different
texts; the profile is then a profile over offset into the continuation, not over
aligned positions (``aligned`` is False in the analysis output).

:func:`leakage_profile` returns a JSON-able dict; :func:`profile_markdown` renders it
as a Markdown table, :func:`profile_figure` / :func:`profile_png` /
:func:`plot_profile` draw it (matplotlib imported lazily, Agg canvas, no pyplot).
The analysis ``"profile"`` (``Auditor(analyses=["profile"])``) stores it in
``AuditResult.extras["profile"]``; options go in ``analysis_options={"profile": {...}}``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_bytes
from ..scoring.token_stats import TokenStats
from ..stats.estimate import Estimate
from ..stats.roc import auc_with_ci
from .registry import AnalysisInput, register_analysis

#: statistic -> sign that makes it "higher = better predicted" (member-like).
ORIENTATION = {"confidence": 1.0, "nll": -1.0, "entropy": -1.0, "top1": 1.0}
_DIGITS = 4


def oriented_statistic(
    stats: TokenStats, statistic: str = "confidence", reference: TokenStats | None = None
) -> np.ndarray:
    """Per-token statistic, higher = better predicted, ``[N, T]`` float64 (NaN in padding).

    With ``reference``, the audited model's value minus the reference model's, per cell.
    """
    if statistic not in ORIENTATION:
        raise ValueError(f"unknown profile statistic {statistic!r}; choose one of {', '.join(ORIENTATION)}")
    values = ORIENTATION[statistic] * stats.field(statistic).double().numpy()
    if reference is not None:
        if reference.mask.shape != stats.mask.shape or not np.array_equal(reference.mask.numpy(), stats.mask.numpy()):
            raise ValueError("the reference TokenStats do not score the same canary positions; score the same canaries")
        values = values - ORIENTATION[statistic] * reference.field(statistic).double().numpy()
    return np.where(stats.mask.numpy(), values, np.nan)


def pairwise_correlation(values: np.ndarray, min_pairs: int = 3) -> np.ndarray:
    """Pearson correlation between columns over rows where both are present, ``[T, T]``.

    ``values`` is ``[n, T]`` with NaN for absent cells. An entry is NaN when fewer than
    ``min_pairs`` rows have both columns or either column is constant on those rows.
    """
    present = np.isfinite(values).astype(np.float64)
    x = np.where(present > 0, values, 0.0)
    pairs = present.T @ present
    with np.errstate(invalid="ignore", divide="ignore"):
        sum_a = x.T @ present  # [j, k]: sum of column j over rows where k is present too
        sum_b = present.T @ x  # [j, k]: sum of column k over rows where j is present too
        mean_a, mean_b = sum_a / pairs, sum_b / pairs
        cov = (x.T @ x) / pairs - mean_a * mean_b
        var_a = ((x**2).T @ present) / pairs - mean_a**2
        var_b = (present.T @ (x**2)) / pairs - mean_b**2
        corr = cov / np.sqrt(var_a * var_b)
    scale = np.maximum(np.abs(mean_a), np.abs(mean_b)) ** 2 + 1.0
    degenerate = (pairs < min_pairs) | (var_a <= 1e-12 * scale) | (var_b <= 1e-12 * scale)
    corr = np.where(degenerate, np.nan, np.clip(corr, -1.0, 1.0))
    diagonal = np.diag_indices_from(corr)
    corr[diagonal] = np.where(np.isnan(corr[diagonal]), np.nan, 1.0)
    return corr


def _correlation_summary(corr: np.ndarray) -> dict:
    size = corr.shape[0]
    off = ~np.eye(size, dtype=bool)
    defined = corr[off & np.isfinite(corr)]
    lag1 = np.array([corr[j, j + 1] for j in range(size - 1)])
    lag1 = lag1[np.isfinite(lag1)]
    complete = bool(np.isfinite(corr).all())
    return {
        "mean_offdiagonal": _json_float(defined.mean()) if defined.size else None,
        "mean_lag1": _json_float(lag1.mean()) if lag1.size else None,
        "effective_positions": _json_float(size**2 / float(np.sum(corr**2))) if complete and size else None,
    }


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), _DIGITS)


def _matrix(corr: np.ndarray) -> list[list[float | None]]:
    return [[_json_float(v) for v in row] for row in corr]


def leakage_profile(
    stats: TokenStats,
    is_member: np.ndarray,
    *,
    statistic: str = "confidence",
    reference: TokenStats | None = None,
    confidence: float = 0.95,
    max_positions: int = 32,
    min_per_class: int = 5,
) -> dict:
    """The per-position leakage profile of ``stats``' canaries (see the module docstring).

    Args:
        stats: TokenStats ``[N, T]`` (rows with non-finite values should be left out).
        is_member: bool ``[N]``.
        statistic: ``"confidence"``, ``"nll"``, ``"entropy"`` or ``"top1"``.
        reference: optional reference statistics; the profile is then of the calibrated
            statistic (audited minus reference).
        confidence: level of the AUC intervals.
        max_positions: profile at most the first this many positions.
        min_per_class: a position is profiled only where at least this many members and
            this many non-members have a scored token.

    Returns:
        A JSON-able dict: ``positions``, per-position ``auc`` (Estimate dicts),
        ``n_members`` / ``n_nonmembers``, ``overall_auc`` (the mean statistic over the
        profiled positions), ``strongest_position``, ``correlation`` (``members`` /
        ``nonmembers`` ``[P, P]`` matrices, ``None`` where undefined) and
        ``correlation_summary`` per class.
    """
    is_member = np.asarray(is_member, dtype=bool)
    if is_member.shape != (stats.num_canaries,):
        raise ValueError(f"is_member has shape {is_member.shape}, expected ({stats.num_canaries},)")
    if max_positions < 1 or min_per_class < 2:
        raise ValueError("max_positions must be >= 1 and min_per_class >= 2")
    values = oriented_statistic(stats, statistic, reference)
    present = np.isfinite(values)
    members_at = present[is_member].sum(axis=0)
    nonmembers_at = present[~is_member].sum(axis=0)
    usable = (members_at >= min_per_class) & (nonmembers_at >= min_per_class)
    positions = np.flatnonzero(usable)[:max_positions]
    if positions.size == 0:
        raise ValueError(
            f"no position has {min_per_class} members and {min_per_class} non-members with a scored token; "
            "the profile needs more canaries of both classes"
        )
    aucs = []
    for j in positions:
        rows = present[:, j]
        aucs.append(auc_with_ci(values[rows, j], is_member[rows], confidence))
    block = values[:, positions]
    counts = np.isfinite(block).sum(axis=1)
    rows = counts > 0
    mean_stat = np.where(np.isfinite(block), block, 0.0).sum(axis=1)[rows] / counts[rows]
    overall = auc_with_ci(mean_stat, is_member[rows], confidence)
    groups = (("members", is_member), ("nonmembers", ~is_member))
    corr = {label: pairwise_correlation(block[rows_of_class]) for label, rows_of_class in groups}
    return {
        "statistic": statistic,
        "calibrated": reference is not None,
        "orientation": "higher = better predicted (member-like)",
        "confidence": confidence,
        "positions": positions.tolist(),
        "positions_available": int(usable.sum()),
        "auc": [_rounded(a) for a in aucs],
        "n_members": members_at[positions].astype(int).tolist(),
        "n_nonmembers": nonmembers_at[positions].astype(int).tolist(),
        "overall_auc": _rounded(overall),
        "strongest_position": int(positions[int(np.argmax([a.value for a in aucs]))]),
        "correlation": {label: _matrix(c) for label, c in corr.items()},
        "correlation_summary": {label: _correlation_summary(c) for label, c in corr.items()},
    }


def _rounded(est: Estimate) -> dict:
    out = est.to_dict()
    for key in ("value", "low", "high"):
        if out[key] is not None:
            out[key] = round(out[key], _DIGITS)
    return out


@register_analysis("profile")
def profile_analysis(inputs: AnalysisInput) -> dict:
    """The ``"profile"`` analysis: :func:`leakage_profile` of the valid canaries, or
    ``{"skipped": reason}`` when the canaries cannot support one.

    Options: ``analysis_options={"profile": {"statistic": ..., "max_positions": ...,
    "min_per_class": ...}}``.
    """
    options = dict(inputs.options.get("profile", {}))
    valid = np.asarray(inputs.valid, dtype=bool)
    try:
        profile = leakage_profile(
            inputs.stats.subset(valid), inputs.is_member[valid], confidence=inputs.confidence, **options
        )
    except ValueError as err:  # too few canaries: the audit goes on without a profile
        return {"skipped": str(err)}
    profile["aligned"] = inputs.canaries.kind == "templated"
    return profile


# ---------------------------------------------------------------------- rendering
def _fmt(est: dict) -> str:
    if est.get("value") is None:
        return "n/a"
    if est.get("low") is None or est.get("high") is None:
        return f"{est['value']:.3f}"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def _fmt_float(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def profile_markdown(profile: dict) -> str:
    """A Markdown rendering of a :func:`leakage_profile` dict: per-position table and correlation summary."""
    level = f"{profile['confidence']:.0%}"
    what = "calibrated " if profile.get("calibrated") else ""
    unit = "secret token" if profile.get("aligned", True) else "scored token (not aligned across canaries)"
    lines = [
        f"Membership signal per {unit}: AUC of the {what}per-token `{profile['statistic']}` "
        f"(members vs non-members, [{level} interval]; 0.5 = no signal).",
        "",
        "| position | AUC | members | non-members |",
        "|---|---|---|---|",
    ]
    strongest = profile["strongest_position"]
    for j, auc, n_in, n_out in zip(profile["positions"], profile["auc"], profile["n_members"], profile["n_nonmembers"]):
        mark = " (strongest)" if j == strongest else ""
        lines.append(f"| {j}{mark} | {_fmt(auc)} | {n_in} | {n_out} |")
    lines += [
        "",
        f"Mean over these positions: AUC {_fmt(profile['overall_auc'])}.",
        "",
        "| correlation between positions | members | non-members |",
        "|---|---|---|",
    ]
    summary = profile["correlation_summary"]
    for key, label, digits in (
        ("mean_offdiagonal", "mean off-diagonal", 2),
        ("mean_lag1", "mean lag-1 (neighbours)", 2),
        ("effective_positions", f"effective independent positions (of {len(profile['positions'])})", 1),
    ):
        members, nonmembers = (_fmt_float(summary[group][key], digits) for group in ("members", "nonmembers"))
        lines.append(f"| {label} | {members} | {nonmembers} |")
    if profile.get("positions_available", len(profile["positions"])) > len(profile["positions"]):
        lines += ["", f"Showing the first {len(profile['positions'])} of {profile['positions_available']} positions."]
    return "\n".join(lines)


def profile_figure(profile: dict) -> Any:
    """A matplotlib ``Figure`` (Agg canvas): per-position AUC with interval bars, and the
    member and non-member correlation heatmaps. Works with ``SummaryWriter.add_figure``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_auc, ax_in, ax_out = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
    positions = np.array(profile["positions"])
    value = np.array([np.nan if a["value"] is None else a["value"] for a in profile["auc"]], dtype=np.float64)
    low = np.array([np.nan if a["low"] is None else a["low"] for a in profile["auc"]], dtype=np.float64)
    high = np.array([np.nan if a["high"] is None else a["high"] for a in profile["auc"]], dtype=np.float64)
    yerr = np.vstack([np.nan_to_num(value - low), np.nan_to_num(high - value)])
    ax_auc.errorbar(positions, value, yerr=yerr, fmt="o", capsize=3, label="per position")
    overall = profile["overall_auc"].get("value")
    if overall is not None:
        ax_auc.axhline(overall, color="tab:green", linestyle="-", linewidth=1, label="mean over positions")
    ax_auc.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax_auc.set_xlabel("secret token position" if profile.get("aligned", True) else "scored token offset")
    ax_auc.set_ylabel(f"AUC ({profile['confidence']:.0%} interval)")
    ax_auc.set_title(f"Membership signal per position ({profile['statistic']})")
    ax_auc.set_ylim(min(0.3, np.nanmin(low) if np.isfinite(low).any() else 0.3), 1.02)
    ax_auc.legend(loc="lower right", fontsize=8)
    image = None
    for ax, key, title in ((ax_in, "members", "members"), (ax_out, "nonmembers", "non-members")):
        rows = profile["correlation"][key]
        matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu_r", interpolation="nearest")
        ticks = np.arange(len(positions))
        step = max(1, len(positions) // 8)
        ax.set_xticks(ticks[::step], [str(p) for p in positions[::step]])
        ax.set_yticks(ticks[::step], [str(p) for p in positions[::step]])
        ax.set_title(f"Position correlation: {title}")
        ax.set_xlabel("position")
    fig.colorbar(image, ax=[ax_in, ax_out], shrink=0.8, label="Pearson correlation")
    return fig


def profile_png(profile: dict) -> bytes:
    """:func:`profile_figure` as PNG bytes."""
    buffer = io.BytesIO()
    profile_figure(profile).savefig(buffer, format="png")
    return buffer.getvalue()


def plot_profile(profile: dict, path: str | os.PathLike) -> Path:
    """Write :func:`profile_figure` of ``profile`` as a PNG at ``path`` (atomically); returns the path."""
    return atomic_write_bytes(path, profile_png(profile))
