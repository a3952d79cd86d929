"""Per-example (shadow-run) LiRA as in the paper: K fine-tuning runs share one canary set (docs/real_model.md).

Setting: SmolLM2-135M (offline, :mod:`mia_guard.experiments.real_model`), top ``--layers``
decoder layers trained with AdamW (lr ``--lr``, batch 16, one pass) on ``--filler``
chunks of Python standard-library source plus the members of ``--canaries``
in-distribution text canaries (held-out chunks cut to ``--window`` BPE tokens, so
every canary scores the same positions; neighbouring tokens of real text are
correlated). ``--runs`` runs share the canaries; each draws its own exact-half split
(independent across runs) and inserts its members ``--repetitions`` times.

Each run in turn is the target; the other ``K - 1`` runs are its reference runs, from
which every canary gets its own IN and OUT means (and the pooled covariance) as in
Rossi et al. / Carlini et al.:

- ``multi_run_seq_lira``: :func:`~mia_guard.attacks.multirun.multi_run_sequence_lira`
  (online, per-canary mean vectors, pooled Ledoit–Wolf Σ, gap shrinkage);
- ``multi_run_lira``: :func:`~mia_guard.attacks.multirun.multi_run_lira` on the mean
  token statistic (online, global variance), and ``multi_run_lira_per_example`` with
  per-canary variances; offline forms of both;
- for context, single-run attacks on each target (``loss``, ``reference``,
  ``seq_lira_refcal``: fitted across canaries of that run alone, cross-fitted).

Scores of all targets are pooled (K x N/2 non-members, enough for 0.1% FPR) under one
threshold; TPR at 0.1% and 1% FPR with Clopper–Pearson intervals, and the ratio of
``multi_run_seq_lira``'s TPR@0.1%FPR to ``multi_run_lira``'s with a percentile
bootstrap interval (canaries resampled within class and run).

    python benchmarks/shadow_runs.py --stats-dir runs/shadow       # the docs table (about 20 CPU minutes)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mia_guard._io import atomic_write_json
from mia_guard.attacks import AttackContext, get
from mia_guard.attacks.multirun import multi_run_lira, multi_run_sequence_lira
from mia_guard.canaries.canary_set import draw_membership
from mia_guard.experiments.frozen_prefix import FrozenPrefix
from mia_guard.experiments.real_model import build_data, cache_hidden, finish_report, train_and_score
from mia_guard.experiments.smollm2 import load_smollm2
from mia_guard.scoring.forward import score_tokens
from mia_guard.scoring.token_stats import TokenStats
from mia_guard.stats.metrics import tpr_at_fpr
from mia_guard.stats.roc import auc_with_ci

FPRS = (0.001, 0.01)
BOOTSTRAP = 500
PAIR = ("multi_run_seq_lira", "multi_run_lira")
SINGLE_RUN = ("loss", "reference", "lira_online_ref", "seq_lira_refcal")


def multi_run_scores(target: int, runs: list[tuple[TokenStats, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every multi-run attack on run ``target`` with the other runs as references."""
    refs = [r for k, r in enumerate(runs) if k != target]
    stats = runs[target][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "multi_run_seq_lira": multi_run_sequence_lira(refs, stats),
            "multi_run_seq_lira_offline": multi_run_sequence_lira(refs, stats, online=False),
            "multi_run_lira": multi_run_lira(refs, stats),
            "multi_run_lira_per_example": multi_run_lira(refs, stats, variance="per_example"),
            "multi_run_lira_offline": multi_run_lira(refs, stats, online=False),
        }


def single_run_scores(stats: TokenStats, reference: TokenStats, is_member: np.ndarray, folds: int) -> dict:
    """The single-run attacks of :data:`SINGLE_RUN` on one run (step 0 as reference)."""
    ctx = AttackContext(stats=stats, reference=reference, is_member=is_member, n_folds=folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: get(name)(ctx) for name in SINGLE_RUN}


def pooled_figures(scores: list[dict[str, np.ndarray]], labels: list[np.ndarray], seed: int) -> dict:
    """Pooled AUC and TPR@FPR per attack, and the bootstrap ratio of :data:`PAIR` at each FPR."""
    all_labels = np.concatenate(labels)
    out = {}
    for name in scores[0]:
        pooled = np.concatenate([s[name] for s in scores])
        out[name] = {"auc": auc_with_ci(pooled, all_labels).to_dict(),
                     **{f"tpr@{f}": tpr_at_fpr(pooled, all_labels, f).to_dict() for f in FPRS}}
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(BOOTSTRAP):
        per_run = []
        for lab in labels:
            m, o = np.flatnonzero(lab), np.flatnonzero(~lab)
            per_run.append(np.concatenate([rng.choice(m, len(m)), rng.choice(o, len(o))]))
        picks.append(per_run)
    ratios = {}
    for fpr in FPRS:
        boot = {}
        for name in PAIR:
            boot[name] = np.array([
                tpr_at_fpr(np.concatenate([s[name][i] for s, i in zip(scores, p)]),
                           np.concatenate([lab[i] for lab, i in zip(labels, p)]), fpr).value
                for p in picks
            ])
        with np.errstate(divide="ignore", invalid="ignore"):
            r = boot[PAIR[0]] / boot[PAIR[1]]
        base = out[PAIR[1]][f"tpr@{fpr}"]["value"]
        r = np.where(np.isnan(r), 1.0, r)
        low, high = np.percentile(r, 2.5, method="lower"), np.percentile(r, 97.5, method="higher")
        ratios[str(fpr)] = {"value": out[PAIR[0]][f"tpr@{fpr}"]["value"] / base if base else float("inf"),
                            "low": float(low), "high": float(high)}
    return {"attacks": out, "ratio": ratios}


def _fmt(est: dict) -> str:
    if est.get("value") is None or est.get("low") is None:
        return "n/a"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def table(fig: dict, n_runs: int, n_canaries: int) -> str:
    rows = fig["attacks"]
    lines = [
        f"| attack ({n_runs} targets x {n_canaries} canaries, pooled) | AUC | TPR@0.1%FPR | TPR@1%FPR |",
        "|---|---|---|---|",
    ]
    for name in sorted(rows, key=lambda n: -(rows[n]["tpr@0.001"]["value"] or 0.0)):
        e = rows[name]
        lines.append(f"| {name} | {_fmt(e['auc'])} | {_fmt(e['tpr@0.001'])} | {_fmt(e['tpr@0.01'])} |")
    lines.append("")
    for fpr, r in fig["ratio"].items():
        lines.append(f"- TPR@{float(fpr):.1%}FPR, {PAIR[0]} / {PAIR[1]}: "
                     f"{r['value']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="K runs sharing the canaries (each the target once)")
    parser.add_argument("--canaries", type=int, default=384)
    parser.add_argument("--filler", type=int, default=64)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stats-dir", help="keep each run's final TokenStats here; saved runs are reused")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be >= 3 (each target needs reference runs with members and non-members)")
    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model, tokenizer = load_smollm2(progress=True)
    prefix = FrozenPrefix(model, args.layers)
    data = build_data(tokenizer, n_canaries=args.canaries, n_filler=args.filler, window=args.window, seed=args.seed,
                      kinds=("texts",))
    hidden = cache_hidden(prefix, data)
    encoded = data.encoded["texts"]
    base = score_tokens(prefix.scorer(list(hidden), list(hidden.values())), encoded)
    settings = {k: getattr(args, k) for k in ("canaries", "filler", "window", "repetitions", "layers", "lr",
                                               "batch_size", "seed")}
    runs: list[tuple[TokenStats, np.ndarray]] = []
    run_seconds = []
    for k in range(args.runs):
        is_member = draw_membership(args.canaries, seed=1000 * args.seed + k, split="half")
        path = Path(args.stats_dir) / f"run{k}.json" if args.stats_dir else None
        if path is not None and path.is_file() and json.loads(path.read_text())["settings"] == settings:
            saved = json.loads(path.read_text())
            runs.append((TokenStats.from_dict(saved["stats"]), np.array(saved["is_member"], dtype=bool)))
            print(f"run {k}: read from {path}", flush=True)
            continue
        scored = train_and_score(prefix, hidden, data, {"texts": is_member}, repetitions=args.repetitions, lr=args.lr,
                                 batch_size=args.batch_size, audits=2, seed=k, label=f"run {k}")
        run_seconds.append(scored.cpu_seconds)
        final = scored.stats["texts"][-1]
        runs.append((final, is_member))
        if path is not None:
            atomic_write_json(path, {"settings": settings, "stats": final.to_dict(),
                                     "is_member": is_member.astype(int).tolist()})
    scores, labels = [], []
    for k, (stats, is_member) in enumerate(runs):
        scores.append({**multi_run_scores(k, runs), **single_run_scores(stats, base, is_member, args.folds)})
        labels.append(is_member)
    fig = pooled_figures(scores, labels, args.seed)
    print("\n" + table(fig, args.runs, args.canaries) + "\n")
    report = {"config": vars(args), "figures": fig, "run_cpu_seconds": run_seconds}
    return finish_report(report, wall, cpu, args.out)


if __name__ == "__main__":
    main()
