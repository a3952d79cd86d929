"""Attack power on the demo's setting: every registered attack side by side, and how far
sequence LiRA gets past the loss test (docs/attack_power.md holds the committed table).

Setting (the demo's, :mod:`mia_guard.experiments.demo`): a tiny byte-level GPT-2
(:func:`~mia_guard.experiments.demo_assets.tiny_gpt2`, 2 layers x 64) trains for ``--steps`` AdamW
steps (batch 16, lr 3e-3, a plain loop) on 120-character chunks of the Python standard
library with ``--canaries`` ``code_credential`` canaries
(``API_SECRET_KEY = "<12 random characters>"``), exactly half of them members, each
member inserted ``--repetitions`` times. Every run is scored at ``--audits`` evenly
spaced steps (step 0, the untrained model, first), so the history-based attacks get a
trajectory.

At the last audit every registered attack (``mia_guard.attacks.available()``) runs on
the same TokenStats with what the :class:`~mia_guard.audit.auditor.Auditor` gives an attack:
the step-0 statistics as reference, the earlier audits as history, the canary texts;
``shadow_classifier`` gets the other seeds' runs of the same setting as shadow runs. An
attack whose needs are unmet is listed as skipped, with the reason. Supervised attacks
are cross-fitted over canary folds (no canary is scored by a fit that saw its label).

Figures per repetition count, over the seeds (95% intervals throughout):

- ``AUC mean``: mean of the per-seed AUCs (Student t over seeds); ``AUC pooled``:
  DeLong on the canaries of all seeds together;
- ``TPR@1% mean``: mean of the per-seed TPRs at 1% FPR (t over seeds);
  ``TPR@1% pooled`` / ``TPR@0.1% pooled``: the canaries of all seeds concatenated and
  one threshold over all their non-members (Clopper–Pearson). One seed alone has
  ``--canaries / 2`` non-members, too few for 0.1%. A shared threshold can only cost
  power to an attack whose score scale drifts between runs;
- ``TPR@1% / loss's``: pooled TPR@1%FPR over the loss attack's, with a percentile
  bootstrap interval (canaries resampled within class and seed, every attack on the
  same resamples); under the table, the same bootstrap gives the difference of pooled
  TPR@1%FPR for the pairs in :data:`PAIRS` (sequence vs univariate LiRA);
- ``s/run``: the attack's wall time per run.

Diagnostics under each table (what sequence LiRA could exploit): the lag-1..3
correlation of per-token confidence within each class, the member-minus-non-member
confidence gap at each secret position, and the share of a non-member token's
confidence variance that the token's identity explains.

    python benchmarks/attack_power.py                      # repetitions 1 and 4, 3 seeds (5-25 min on 2 cores)
    python benchmarks/attack_power.py --repetitions 1 4 16 --seeds 0 1 2 3 4 --stats-dir runs/  # the docs table
    python benchmarks/attack_power.py --repetitions 4 --seeds 0 --steps 300      # a quick look

``--stats-dir`` keeps every run's TokenStats; a rerun with the same settings reads them
back instead of training (to resume, or to rerun the attacks after changing them).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mia_guard import CanarySet
from mia_guard._io import atomic_write_json
from mia_guard.attacks import AttackContext, available, get
from mia_guard.attacks.learned import ShadowRun
from mia_guard.attacks.sequence_variants import calibrate, key_means, token_keys
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize
from mia_guard.scoring.forward import score_tokens
from mia_guard.scoring.token_stats import TokenStats
from mia_guard.stats.estimate import mean_with_ci
from mia_guard.stats.metrics import tpr_at_fpr
from mia_guard.stats.roc import auc_with_ci

FPRS = (0.001, 0.01)
MAX_LENGTH = 128
CHUNK_CHARS = 120
BASELINE = "loss"
#: The attack that learns from other runs; it gets the other seeds' runs of the same setting.
SHADOW = "shadow_classifier"
BOOTSTRAP = 500
#: Paired comparisons printed under each table (difference of pooled TPR@1%FPR, bootstrap interval).
PAIRS = (
    ("seq_lira", "lira_online"),
    ("seq_lira_pooled", "lira_online"),
    ("seq_lira_tokencal", "lira_tokencal"),
    ("seq_lira_tokencal", "seq_lira"),
)


# ---------------------------------------------------------------------------- one training run
@dataclass
class Run:
    """The TokenStats of one training run at each audit (step 0 first) and its membership."""

    repetitions: int
    seed: int
    steps: list[int]
    stats: list[TokenStats]
    is_member: np.ndarray
    texts: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return {
            "repetitions": self.repetitions,
            "seed": self.seed,
            "steps": self.steps,
            "stats": [s.to_dict() for s in self.stats],
            "is_member": self.is_member.astype(int).tolist(),
            "texts": self.texts,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Run":
        return cls(
            data["repetitions"],
            data["seed"],
            list(data["steps"]),
            [TokenStats.from_dict(s) for s in data["stats"]],
            np.array(data["is_member"], dtype=bool),
            list(data["texts"]),
            float(data["seconds"]),
        )

    def context(self, n_folds: int) -> AttackContext:
        """What the Auditor gives an attack at the last audit: reference = step 0, history = the rest."""
        return AttackContext(
            stats=self.stats[-1],
            texts=self.texts,
            reference=self.stats[0],
            history=self.stats[:-1],
            history_steps=self.steps[:-1],
            is_member=self.is_member,
            n_folds=n_folds,
            seed=self.seed,
        )


def train_run(repetitions: int, seed: int, args: argparse.Namespace) -> Run:
    """Train one model with the members inserted ``repetitions`` times, scoring at the audit steps."""
    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(args.canaries, "code_credential", seed=seed, split="half")
    corpus = stdlib_corpus(max_chars=args.corpus_chunks * CHUNK_CHARS, chunk_chars=CHUNK_CHARS, seed=seed)
    rows = tokenize(canaries.insert_into(corpus, repetitions=repetitions, seed=seed), tokenizer, MAX_LENGTH)
    encoded = encode_canaries(canaries, tokenizer)
    model = tiny_gpt2(n_positions=MAX_LENGTH, seed=seed)
    audit_steps = np.unique(np.linspace(0, args.steps, args.audits).round().astype(int)).tolist()
    collate = CausalLMCollator(max_length=MAX_LENGTH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 3])
    order: list[int] = []
    stats: list[TokenStats] = []
    started = time.perf_counter()
    for step in range(args.steps + 1):
        if step in audit_steps:
            stats.append(score_tokens(model, encoded))
            elapsed = time.perf_counter() - started
            print(f"  repetitions {repetitions} seed {seed}: step {step}/{args.steps} scored ({elapsed:.0f} s)",
                  flush=True)
        if step == args.steps:
            break
        if len(order) < args.batch_size:
            order.extend(rng.permutation(len(rows)).tolist())
        model.train()
        model(**collate([rows[i] for i in order[: args.batch_size]])).loss.backward()
        del order[: args.batch_size]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Run(repetitions, seed, audit_steps, stats, canaries.is_member.copy(), canaries.texts,
               time.perf_counter() - started)


# ---------------------------------------------------------------------------- attacks on one run
def shadow_runs(run: Run, others: Sequence[Run]) -> list[ShadowRun]:
    """The other seeds' runs of the same setting (own canaries and split) as shadow runs for ``run``."""
    return [
        ShadowRun(o.stats[-1], o.is_member, o.stats[0], tuple(o.stats), f"seed {o.seed}", o.steps[-1])
        for o in others
        if o is not run
    ]


def run_attacks(
    run: Run, attacks: Sequence[str], n_folds: int, shadows: Sequence[ShadowRun]
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, float]]:
    """Scores ``[N]`` of every attack at the last audit, the reasons for skipped ones, and seconds per attack."""
    ctx = run.context(n_folds)
    params = {SHADOW: {"shadow": list(shadows)}}
    scores, skipped, seconds = {}, {}, {}
    for name in attacks:
        attack = get(name)
        missing = attack.missing_needs(ctx)
        if name == SHADOW and not shadows:
            missing.append("shadow runs (the other seeds' runs of this setting: use 2 or more seeds)")
        if missing:
            skipped[name] = f"needs {', '.join(missing)}"
            continue
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                scores[name] = attack(ctx, **params.get(name, {}))
            except ValueError as err:
                skipped[name] = str(err)
        seconds[name] = time.perf_counter() - started
    return scores, skipped, seconds


# ---------------------------------------------------------------------------- figures
def summarize(runs: list[Run], scores: list[dict[str, np.ndarray]], attacks: Sequence[str], seed: int) -> dict:
    """Per attack: AUC and TPR@FPR, mean over seeds and pooled over canaries; ratio to the loss test.

    Also the paired bootstrap comparisons of :data:`PAIRS` (difference of pooled TPR@1%FPR).
    """
    labels = [r.is_member for r in runs]
    pooled_labels = np.concatenate(labels)
    rng = np.random.default_rng(seed)
    resamples = list(zip(*(_stratified_resamples(lab, BOOTSTRAP, rng) for lab in labels)))
    attacks = [name for name in attacks if all(name in s for s in scores)]
    out, boot = {}, {}
    for name in attacks:
        per_seed = [s[name] for s in scores]
        pooled = np.concatenate(per_seed)
        entry: dict[str, Any] = {
            "auc_mean": _mean([auc_with_ci(s, lab).value for s, lab in zip(per_seed, labels)]),
            "auc_pooled": auc_with_ci(pooled, pooled_labels).to_dict(),
        }
        for fpr in FPRS:
            per = [tpr_at_fpr(s, lab, fpr) for s, lab in zip(per_seed, labels)]
            entry[f"tpr@{fpr}_mean"] = _mean([e.value for e in per]) if all(e.resolvable for e in per) else None
            entry[f"tpr@{fpr}_pooled"] = tpr_at_fpr(pooled, pooled_labels, fpr).to_dict()
        boot[name] = np.array([
            tpr_at_fpr(np.concatenate([s[i] for s, i in zip(per_seed, picks)]),
                       np.concatenate([lab[i] for lab, i in zip(labels, picks)]), 0.01).value
            for picks in resamples
        ])
        out[name] = entry
    if BASELINE in out:
        base = out[BASELINE]["tpr@0.01_pooled"]["value"]
        for name, entry in out.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = boot[name] / boot[BASELINE]
            low, high = np.percentile(ratios, [2.5, 97.5]) if np.isfinite(ratios).all() else (np.nan, np.inf)
            value = entry["tpr@0.01_pooled"]["value"]
            entry["ratio_to_loss"] = {
                "value": value / base if base > 0 else float("inf"), "low": float(low), "high": float(high)
            }
    comparisons = {}
    for first, second in PAIRS:
        if first in out and second in out:
            diff = boot[first] - boot[second]
            value = out[first]["tpr@0.01_pooled"]["value"] - out[second]["tpr@0.01_pooled"]["value"]
            low, high = np.percentile(diff, [2.5, 97.5])
            comparisons[f"{first} - {second}"] = {"value": value, "low": float(low), "high": float(high)}
    return {"attacks": out, "comparisons": comparisons}


def _stratified_resamples(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    members, others = np.flatnonzero(labels), np.flatnonzero(~labels)
    return [np.concatenate([rng.choice(members, len(members)), rng.choice(others, len(others))]) for _ in range(n)]


def _mean(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return {"value": float(values[0]), "low": None, "high": None}
    return mean_with_ci(values).to_dict()


def diagnostics(runs: list[Run], max_lag: int = 3) -> dict:
    """What sequence LiRA could exploit, averaged over the runs (last audit, per-token confidence).

    - ``lag_correlation``: lag-1..``max_lag`` correlation between a canary's tokens, per class;
    - ``position_gap``: member mean minus non-member mean at each secret position;
    - ``token_identity_share``: share of a non-member token's confidence variance explained by
      which token it is (key means fitted on half of the non-members, variance left measured
      on the other half).
    """
    corr: dict[str, list] = {"non-members": [], "members": []}
    gaps, shares = [], []
    rng = np.random.default_rng(0)
    for run in runs:
        values = run.stats[-1].confidence.double().numpy()
        for label, key in ((False, "non-members"), (True, "members")):
            x = values[run.is_member == label]
            z = (x - x.mean(axis=0)) / x.std(axis=0)
            corr[key].append([float(np.mean(z[:, :-k] * z[:, k:])) for k in range(1, max_lag + 1)])
        gaps.append(values[run.is_member].mean(axis=0) - values[~run.is_member].mean(axis=0))
        keys = token_keys(run.texts, run.stats[-1].mask.numpy())
        outside = rng.permutation(np.flatnonzero(~run.is_member))
        fit_rows, test_rows = outside[: len(outside) // 2], outside[len(outside) // 2 :]
        left = calibrate(values[test_rows], keys[test_rows], key_means(values, keys, fit_rows))
        shares.append(1.0 - left.var() / values[test_rows].var())
    return {
        "lag_correlation": {k: np.mean(v, axis=0).round(3).tolist() for k, v in corr.items()},
        "position_gap": np.mean(gaps, axis=0).round(3).tolist(),
        "token_identity_share": round(float(np.mean(shares)), 3),
    }


# ---------------------------------------------------------------------------- printing
def _fmt(est: dict | None, digits: int = 3) -> str:
    if est is None or est.get("value") is None:
        return "n/a"
    value = est["value"]
    if est.get("low") is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"


def _fmt_ratio(est: dict | None) -> str:
    if est is None:
        return "n/a"
    return f"{est['value']:.2f}x [{est['low']:.2f}, {est['high']:.2f}]"


def table(repetitions: int, setting: dict, n_seeds: int, n_canaries: int) -> str:
    """The Markdown section of one repetition count, attacks sorted by pooled TPR@1%FPR."""
    summary = setting["summary"]["attacks"]
    lines = [
        f"### Repetitions {repetitions} ({n_seeds} seeds x {n_canaries} canaries, half of them members)",
        "",
        "| attack | AUC mean | AUC pooled | TPR@1% mean | TPR@1% pooled | TPR@0.1% pooled | TPR@1% / loss's | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(summary, key=lambda n: -summary[n]["tpr@0.01_pooled"]["value"]):
        e = summary[name]
        lines.append(
            f"| {name} | {_fmt(e['auc_mean'])} | {_fmt(e['auc_pooled'])} | {_fmt(e['tpr@0.01_mean'])} | "
            f"{_fmt(e['tpr@0.01_pooled'])} | {_fmt(e['tpr@0.001_pooled'])} | {_fmt_ratio(e.get('ratio_to_loss'))} | "
            f"{setting['seconds'].get(name, 0.0):.1f} |"
        )
    lines.append("")
    for pair, est in setting["summary"]["comparisons"].items():
        lines.append(f"- pooled TPR@1%FPR, {pair}: {_fmt(est)}")
    for name, why in sorted(setting["skipped"].items()):
        lines.append(f"- skipped `{name}`: {why}")
    diag = setting["diagnostics"]
    lags = diag["lag_correlation"]
    lines.append(
        f"- lag-1..3 correlation of per-token confidence: non-members {lags['non-members']}, members {lags['members']}"
    )
    lines.append(f"- IN-OUT confidence gap per secret position: {diag['position_gap']}")
    lines.append(
        f"- share of a non-member token's confidence variance explained by the token's identity: "
        f"{diag['token_identity_share']:.0%}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
#: Settings a saved run must share with the current command to be reused from --stats-dir.
RUN_SETTINGS = ("canaries", "steps", "audits", "corpus_chunks", "batch_size", "lr")


def load_or_train(args: argparse.Namespace) -> list[Run]:
    """Every (repetitions, seed) run: read from ``--stats-dir`` if saved there with the same settings, else trained."""
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    runs = []
    for repetitions in args.repetitions:
        for seed in args.seeds:
            path = Path(args.stats_dir) / f"reps{repetitions}_seed{seed}.json" if args.stats_dir else None
            if path is not None and path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("settings") != settings:
                    raise SystemExit(
                        f"{path} was trained with {data.get('settings')}, this command asks for {settings}; "
                        "use another --stats-dir or delete the file"
                    )
                print(f"  repetitions {repetitions} seed {seed}: read from {path}", flush=True)
                runs.append(Run.from_dict(data))
                continue
            run = train_run(repetitions, seed, args)
            if path is not None:
                atomic_write_json(path, {**run.to_dict(), "settings": settings})
            runs.append(run)
    return runs


def evaluate_setting(group: list[Run], attacks: Sequence[str], args: argparse.Namespace) -> dict:
    """Every attack on every run of one repetition count, then the figures over the seeds."""
    scores, skipped, seconds = [], {}, {}
    for run in group:
        started = time.perf_counter()
        run_scores, run_skipped, run_seconds = run_attacks(run, attacks, args.folds, shadow_runs(run, group))
        scores.append(run_scores)
        skipped.update(run_skipped)
        for name, value in run_seconds.items():
            seconds[name] = seconds.get(name, 0.0) + value / len(group)
        print(f"  attacks on repetitions {run.repetitions} seed {run.seed}: {time.perf_counter() - started:.0f} s",
              flush=True)
    return {
        "summary": summarize(group, scores, attacks, seed=group[0].repetitions),
        "skipped": skipped,
        "seconds": seconds,
        "diagnostics": diagnostics(group),
        "train_seconds": [r.seconds for r in group],
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--canaries", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--audits", type=int, default=5, help="audits per run, evenly spaced, step 0 included")
    parser.add_argument("--corpus-chunks", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attacks", nargs="+", help="attack names (default: every registered attack)")
    parser.add_argument(
        "--stats-dir",
        help="keep every run's TokenStats here (JSON); runs already saved with the same settings are read back",
    )
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    attacks = args.attacks or available()
    started = time.perf_counter()
    runs = load_or_train(args)
    report: dict = {"config": vars(args), "settings": {}}
    for repetitions in args.repetitions:
        group = [r for r in runs if r.repetitions == repetitions]
        setting = evaluate_setting(group, attacks, args)
        print("\n" + table(repetitions, setting, len(group), len(group[0].is_member)) + "\n", flush=True)
        report["settings"][str(repetitions)] = setting
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
