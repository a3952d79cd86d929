"""Do training trajectories beat final-step attacks? A tiny GPT-2 audited ~8 times while it trains.

For each seed and canary kind, a byte-level GPT-2 (2 layers, 64 wide) trains with a plain
AdamW loop on Python-stdlib chunks with the member canaries inserted (8 copies each); an
:class:`~mia_guard.audit.auditor.Auditor` scores the canaries at ``--audits`` evenly spaced steps
(step 0 included) and keeps their statistics. At the last audit every attack runs on the
context the Auditor gives it (earlier audits as the history, step 0 as the reference):
the trajectory attacks (``trajectory_logreg``, ``trajectory_rnn``: the canaries' metrics
over all audits) against attacks that read only the final model (``loss``,
``min_k_plus_plus``, ``lira_online``, ``seq_lira``) and ``reference`` (final loss minus
step-0 loss, a two-point trajectory).

Canary kinds:

- ``templated``: ``code_credential`` secrets (12 random characters): every canary is
  equally hard a priori, so the final loss is already well calibrated;
- ``texts``: held-out 64-character stdlib chunks, whose difficulty varies a lot; the
  early audits tell a hard non-member from a memorized member of the same final loss.

Every figure carries its 95% interval: per seed, AUC (DeLong) and TPR at 1% / 0.1% FPR
(Clopper–Pearson); across seeds, the mean AUC (Student t over seeds) and the TPR pooled
over seeds (members flagged at each run's own threshold, summed; Clopper–Pearson).
``--canaries 2048`` with an exact half split gives 1024 non-members per run, enough to
resolve 0.1% FPR.

    python benchmarks/trajectory_power.py --out power.json --histories runs/   # 3 seeds x 2 kinds, ~15 CPU-minutes
    python benchmarks/trajectory_power.py --kinds texts --seeds 0               # one run
    python benchmarks/trajectory_power.py --from-histories runs/ \
        --attack-params '{"trajectory_logreg": {"C": 0.1}}'                      # re-score saved runs, no training
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mia_guard import AuditHistory, Auditor, CanarySet
from mia_guard._io import atomic_write_json
from mia_guard.attacks import AttackContext, get
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize
from mia_guard.stats.estimate import clopper_pearson, mean_with_ci
from mia_guard.stats.metrics import summarize_attack

TRAJECTORY = ("trajectory_logreg", "trajectory_rnn")
FINAL_STEP = ("loss", "min_k_plus_plus", "lira_online", "seq_lira", "reference")
FPRS = (0.001, 0.01)
CHUNK = 64


def make_canaries(kind: str, n: int, seed: int) -> tuple[CanarySet, list[str]]:
    """The canaries and the training texts (stdlib chunks, canary texts excluded)."""
    corpus = list(dict.fromkeys(stdlib_corpus(max_chars=12_000 * CHUNK, chunk_chars=CHUNK, seed=seed)))
    if kind == "templated":
        return CanarySet.generate(n, "code_credential", seed=seed, split="half"), corpus
    order = np.random.default_rng([seed, 7]).permutation(len(corpus))
    canary_texts = [corpus[i] for i in order[:n]]
    return CanarySet.from_texts(canary_texts, seed=seed, split="half"), [corpus[i] for i in np.sort(order[n:])]


def train_with_audits(
    model: Any, rows: list[dict], auditor: Auditor, audit_steps: Sequence[int], *, batch_size: int, lr: float, seed: int
) -> None:
    """Plain AdamW loop over shuffled ``rows``; ``auditor.audit`` at each step of ``audit_steps``."""
    collate = CausalLMCollator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 3])
    order: list[int] = []
    audit_at = set(audit_steps)
    for step in range(max(audit_steps) + 1):
        if step in audit_at:
            auditor.audit(model, step)
        if step == max(audit_steps):
            break
        if len(order) < batch_size:
            order.extend(rng.permutation(len(rows)).tolist())
        model.train()
        model(**collate([rows[i] for i in order[:batch_size]])).loss.backward()
        del order[:batch_size]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def train_and_audit(kind: str, seed: int, args: argparse.Namespace) -> tuple[CanarySet, AuditHistory]:
    """Train one model, recording each audit's statistics (the audits run only ``loss``)."""
    tokenizer = byte_tokenizer()
    canaries, corpus = make_canaries(kind, args.canaries, seed)
    data = canaries.insert_into(corpus[: args.corpus_chunks], repetitions=args.repetitions, seed=seed)
    rows = tokenize(data, tokenizer, 128)
    auditor = Auditor(canaries, tokenizer, attacks=("loss",), fprs=FPRS, reference="none", seed=seed)
    audit_steps = np.unique(np.linspace(0, args.steps, args.audits).round().astype(int)).tolist()
    model = tiny_gpt2(seed=seed)
    train_with_audits(model, rows, auditor, audit_steps, batch_size=args.batch_size, lr=args.lr, seed=seed)
    return canaries, auditor.history


def final_metrics(canaries: CanarySet, history: AuditHistory, attack_params: dict, seed: int) -> dict:
    """Every attack at the last audit, as the Auditor runs them: the history's earlier audits as the
    trajectory, the first audit (step 0) as the reference, canaries with non-finite statistics left out."""
    stats = [r.stats for r in history.results]
    valid = ~np.logical_or.reduce([s.nonfinite_canaries() for s in stats])
    texts = canaries.texts
    ctx = AttackContext(
        stats=stats[-1].subset(valid),
        texts=[t for t, ok in zip(texts, valid) if ok] if texts is not None else None,
        reference=stats[0].subset(valid),
        history=[s.subset(valid) for s in stats[:-1]],
        history_steps=history.steps[:-1],
        is_member=canaries.is_member[valid],
        seed=seed,
    )
    metrics, seconds = {}, {}
    for name in FINAL_STEP + TRAJECTORY:
        started = time.perf_counter()
        scores = get(name)(ctx, **attack_params.get(name, {}))
        seconds[name] = time.perf_counter() - started
        metrics[name] = summarize_attack(name, scores, ctx.is_member, FPRS, seed=seed).to_dict()
    return {"metrics": metrics, "attack_seconds": seconds, "n_valid": int(valid.sum())}


def run_once(kind: str, seed: int, args: argparse.Namespace) -> dict:
    """One run (trained now, or loaded from ``--from-histories``) and its last audit's metrics."""
    name = f"{kind}_seed{seed}.json"
    started = time.perf_counter()
    if args.from_histories:
        canaries = make_canaries(kind, args.canaries, seed)[0]
        history = AuditHistory.load(Path(args.from_histories) / name)
        if history.canary_hash != canaries.content_hash:
            raise ValueError(f"{name} was recorded with other canaries; pass the --canaries it was run with")
    else:
        canaries, history = train_and_audit(kind, seed, args)
        if args.histories:
            history.save(Path(args.histories) / name)
    return {
        "kind": kind,
        "seed": seed,
        "audit_steps": history.steps,
        "wall_seconds": time.perf_counter() - started,
        **final_metrics(canaries, history, json.loads(args.attack_params), seed),
    }


def summarize(runs: list[dict], attacks: Sequence[str]) -> dict:
    """Across seeds: mean AUC with a t interval; TPR at each FPR pooled over seeds (Clopper–Pearson)."""
    out = {}
    for name in attacks:
        per = [r["metrics"][name] for r in runs if name in r["metrics"]]
        if not per:
            continue
        aucs = np.array([m["auc"]["value"] for m in per])
        entry = {"auc": mean_with_ci(aucs).to_dict() if len(aucs) > 1 else {"value": float(aucs[0])}}
        for fpr in FPRS:
            resolved = [m for m in per if m["tpr_at_fpr"][repr(fpr)]["value"] is not None]
            if not resolved:
                entry[f"tpr@{fpr}"] = {"value": None, "note": "too few non-members to resolve this FPR"}
                continue
            flagged = sum(round(m["tpr_at_fpr"][repr(fpr)]["value"] * m["n_members"]) for m in resolved)
            total = sum(m["n_members"] for m in resolved)
            low, high = clopper_pearson(flagged, total)
            entry[f"tpr@{fpr}"] = {
                "value": flagged / total, "low": low, "high": high, "flagged": flagged, "members": total
            }
        out[name] = entry
    return out


def _fmt(est: dict) -> str:
    if est["value"] is None:
        return "n/a"
    if "low" not in est or est["low"] is None:
        return f"{est['value']:.3f}"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def print_run(run: dict, attacks: Sequence[str]) -> None:
    print(f"\n{run['kind']} seed {run['seed']}: audits at {run['audit_steps']} ({run['wall_seconds']:.0f} s)")
    print(f"  {'attack':<18} {'AUC':<24} {'TPR@1%FPR':<24} TPR@0.1%FPR")
    for name in attacks:
        m = run["metrics"][name]
        tprs = [_fmt(m["tpr_at_fpr"][repr(f)]) for f in (0.01, 0.001)]
        print(f"  {name:<18} {_fmt(m['auc']):<24} {tprs[0]:<24} {tprs[1]}")


def _pooled_tpr(summary: dict, attack: str, fpr: float) -> float:
    """The pooled TPR point estimate, or -1 where the attack did not run or the FPR is unresolved."""
    value = summary.get(attack, {}).get(f"tpr@{fpr}", {}).get("value")
    return -1.0 if value is None else value


def print_summary(kind: str, summary: dict, n_seeds: int) -> None:
    print(f"\n{kind}: over {n_seeds} seeds (AUC: mean [t 95%]; TPR: pooled flagged/members [Clopper-Pearson 95%])")
    print(f"  {'attack':<18} {'AUC':<24} {'TPR@1%FPR':<24} TPR@0.1%FPR")
    for name, entry in summary.items():
        print(f"  {name:<18} {_fmt(entry['auc']):<24} {_fmt(entry['tpr@0.01']):<24} {_fmt(entry['tpr@0.001'])}")
    for fpr in FPRS:
        best_final = max(FINAL_STEP, key=lambda attack: _pooled_tpr(summary, attack, fpr))
        for name in TRAJECTORY:
            traj, base, best = (_pooled_tpr(summary, a, fpr) for a in (name, "loss", best_final))
            if min(traj, base) < 0:
                continue
            ratio = f"{traj / base:.2f}x" if base > 0 else "inf (loss flags none)"
            print(
                f"  {name} vs loss at {fpr:.1%} FPR: {traj:.3f} vs {base:.3f} ({ratio}, {traj - base:+.3f}); "
                f"best final-step attack ({best_final}) {best:.3f}"
            )


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=("templated", "texts"), default=["templated", "texts"])
    parser.add_argument("--canaries", type=int, default=2048)
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--corpus-chunks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--audits", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attack-params", default="{}", help='JSON, e.g. \'{"trajectory_logreg": {"C": 0.1}}\'')
    parser.add_argument("--histories", help="save each run's audit history (with statistics) in this directory")
    parser.add_argument("--from-histories", help="re-score the runs saved by --histories here instead of training")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    attacks = FINAL_STEP + TRAJECTORY
    report: dict = {"config": vars(args), "runs": [], "summary": {}}
    for kind in args.kinds:
        runs = []
        for seed in args.seeds:
            run = run_once(kind, seed, args)
            print_run(run, attacks)
            runs.append(run)
        report["runs"].extend(runs)
        report["summary"][kind] = summarize(runs, attacks)
        print_summary(kind, report["summary"][kind], len(runs))
    if args.out:
        atomic_write_json(args.out, report)
        print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
