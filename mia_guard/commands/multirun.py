"""``mia-guard multirun``: LiRA with per-canary means estimated from several training runs.

Each run directory holds the ``history.json`` a training run wrote (the Hugging Face
callback writes it to ``<output_dir>/mia/``) and that run's ``canaries.json``. All runs
must have planted the *same* canaries (same texts or token ids, in the same order), each
with its own membership split (``CanarySet.with_membership``). The first directory is the
target: its canaries are scored by
:func:`~mia_guard.attacks.multirun.multi_run_sequence_lira` and
:func:`~mia_guard.attacks.multirun.multi_run_lira`, fitted on the other (reference) runs
only, and the table sets them beside the target run's own single-run figures.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..cli import InputError

if TYPE_CHECKING:  # numpy is imported where it runs: registering the command stays light
    import numpy as np

HISTORY_FILE = "history.json"
CANARY_FILE = "canaries.json"
OUTPUT_FORMAT = "mia_guard.multirun"
OUTPUT_VERSION = 1
#: Suffix of the target run's own (single-run) attack figures in the table.
SINGLE_RUN_SUFFIX = " (target alone)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "multirun",
        help="score a run's canaries with LiRA fitted on reference runs of the same canaries",
        description=f"Read DIR/{HISTORY_FILE} and DIR/{CANARY_FILE} of every run. TARGET_DIR's canaries are "
        "scored with per-canary member / non-member means estimated from the REF_DIR runs (multi-run "
        "sequence LiRA and univariate LiRA), at each run's last audit or at --step. All runs must plant "
        "the same canaries with different membership splits and keep token statistics in their history.",
    )
    parser.add_argument("target", type=Path, metavar="TARGET_DIR", help="the audited run's mia output directory")
    parser.add_argument("references", type=Path, nargs="*", metavar="REF_DIR", help="reference runs' directories")
    parser.add_argument(
        "--canaries",
        type=Path,
        nargs="+",
        help=f"canary file of each run, target first (default: DIR/{CANARY_FILE} of each run)",
    )
    parser.add_argument("--step", type=int, help="use every run's audit at this training step (default: the last)")
    parser.add_argument("--statistic", choices=("confidence", "nll"), default="confidence")
    parser.add_argument(
        "--covariance",
        choices=("ledoit_wolf", "diagonal", "ar1", "toeplitz"),
        default="ledoit_wolf",
        help="covariance estimator of sequence LiRA (default ledoit_wolf)",
    )
    parser.add_argument("--fprs", nargs="+", type=float, help="FPR levels (default: the target history's)")
    parser.add_argument("--confidence", type=float, help="interval level (default: the target history's)")
    parser.add_argument("--output", type=Path, help="write the multi-run scores and metrics here (JSON)")
    parser.set_defaults(run=run)


@dataclass
class RunAudit:
    """One run at the chosen step: its audit, canaries and audit settings."""

    directory: Path
    result: Any  # AuditResult with stats
    canaries: Any  # CanarySet
    fprs: tuple[float, ...]
    confidence: float


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .._io import atomic_write_json
    from ..audit.result import AuditResult
    from ..stats.estimate import mean_with_ci
    from ..stats.metrics import summarize_attack

    if not args.references:
        raise InputError(
            "multi-run LiRA needs at least one reference run besides the target: "
            "mia-guard multirun TARGET_DIR REF_DIR [REF_DIR ...] (each a run of the same canaries with its own split)"
        )
    directories = [args.target, *args.references]
    runs = [_load_run(d, c, args.step) for d, c in zip(directories, _canary_paths(directories, args.canaries))]
    target, references = runs[0], runs[1:]
    _check_same_canaries(target, references)
    _check_splits(target, references)
    fprs = tuple(sorted(args.fprs or target.fprs))
    confidence = args.confidence if args.confidence is not None else target.confidence

    valid = np.logical_and.reduce([~r.result.stats.nonfinite_canaries() for r in runs])
    notes = []
    if not valid.all():
        notes.append(
            f"{int((~valid).sum())} canaries had NaN/inf statistics in some run and were left out "
            f"(first indices {np.flatnonzero(~valid)[:10].tolist()})"
        )
    scores, caught = multi_run_scores(target, references, valid, args.statistic, args.covariance)
    notes.extend(caught)
    is_member = target.canaries.is_member[valid]
    metrics = {name: summarize_attack(name, s, is_member, fprs, confidence) for name, s in scores.items()}
    single_run = {f"{name}{SINGLE_RUN_SUFFIX}": m for name, m in target.result.metrics.items()}
    nll = target.result.stats.masked_mean("nll")[valid]
    result = AuditResult(
        step=target.result.step,
        metrics={**metrics, **single_run},
        scores={name: _on_all_canaries(s, valid) for name, s in scores.items()},
        member_nll=mean_with_ci(nll[is_member], confidence),
        nonmember_nll=mean_with_ci(nll[~is_member], confidence),
        notes=notes,
        invalid_canaries=np.flatnonzero(~valid).tolist(),
    )
    print(
        f"multi-run LiRA of {target.directory} fitted on {len(references)} reference run(s) "
        f"({', '.join(str(r.directory) for r in references)}) at steps {[r.result.step for r in runs]}"
    )
    print(result.table())
    if args.output:
        atomic_write_json(
            args.output,
            {
                "format": OUTPUT_FORMAT,
                "version": OUTPUT_VERSION,
                "target": str(target.directory),
                "references": [str(r.directory) for r in references],
                "steps": [int(r.result.step) for r in runs],
                "statistic": args.statistic,
                "covariance": args.covariance,
                "result": result.to_dict(include_stats=False),
            },
        )
        print(f"wrote {args.output}")
    return 0


def multi_run_scores(
    target: RunAudit, references: Sequence[RunAudit], valid: np.ndarray, statistic: str, covariance: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Scores ``[n_valid]`` of the multi-run attacks (online and offline) and their warnings, in words."""
    from ..attacks.multirun import multi_run_lira, multi_run_sequence_lira

    reference_runs = [(r.result.stats.subset(valid), r.canaries.is_member[valid]) for r in references]
    stats = target.result.stats.subset(valid)
    attacks = {
        "multirun_seq_lira": lambda: multi_run_sequence_lira(
            reference_runs, stats, statistic=statistic, covariance=covariance
        ),
        "multirun_seq_lira_offline": lambda: multi_run_sequence_lira(
            reference_runs, stats, statistic=statistic, covariance=covariance, online=False
        ),
        "multirun_lira": lambda: multi_run_lira(reference_runs, stats, statistic=statistic),
        "multirun_lira_offline": lambda: multi_run_lira(reference_runs, stats, statistic=statistic, online=False),
    }
    scores, notes = {}, []
    for name, attack in attacks.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores[name] = attack()
        notes.extend(dict.fromkeys(f"{name}: {w.message}" for w in caught))
    return scores, notes


def _on_all_canaries(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    import numpy as np

    full = np.full(len(valid), np.nan)
    full[valid] = scores
    return full


# ---------------------------------------------------------------------------- loading and checks
def _canary_paths(directories: Sequence[Path], explicit: Sequence[Path] | None) -> list[Path]:
    if explicit is None:
        return [d / CANARY_FILE for d in directories]
    if len(explicit) != len(directories):
        raise InputError(
            f"--canaries needs one file per run ({len(directories)}: the target's first, then each REF_DIR's), "
            f"got {len(explicit)}"
        )
    return list(explicit)


def _load_run(directory: Path, canary_path: Path, step: int | None) -> RunAudit:
    from ..audit.result import AuditHistory
    from ..canaries.canary_set import CanarySet

    history_path = directory / HISTORY_FILE
    if not history_path.is_file():
        raise InputError(f"{history_path} does not exist; pass run directories that hold {HISTORY_FILE}")
    if not canary_path.is_file():
        raise InputError(
            f"canary file {canary_path} does not exist; multirun reads every run's canaries to check that the runs "
            f"planted the same ones: keep {CANARY_FILE} next to {HISTORY_FILE} or pass --canaries (one per run)"
        )
    history = AuditHistory.load(history_path)
    canaries = CanarySet.load(canary_path)
    if history.canary_hash != canaries.content_hash:
        raise InputError(
            f"{canary_path} is not the canary set {history_path} was audited with (content hashes differ); "
            "pass the canaries.json written by that run"
        )
    if not history.results:
        raise InputError(f"{history_path} holds no audits")
    if step is None:
        result = history.results[-1]
    else:
        matches = [r for r in history.results if r.step == step]
        if not matches:
            raise InputError(f"{history_path} has no audit at step {step}; its audits are at steps {history.steps}")
        result = matches[-1]
    if result.stats is None:
        raise InputError(
            f"{history_path}: the audit at step {result.step} was saved without token statistics "
            "(AuditHistory.save(include_stats=False)); multi-run LiRA needs them: save histories with statistics"
        )
    if result.stats.num_canaries != len(canaries):
        raise InputError(
            f"{history_path}: the audit at step {result.step} scored {result.stats.num_canaries} canaries, "
            f"but {canary_path} holds {len(canaries)}"
        )
    return RunAudit(directory, result, canaries, tuple(history.fprs), float(history.confidence))


def _canary_key(canary: Any) -> tuple:
    return (canary.text, canary.token_ids)


def _check_same_canaries(target: RunAudit, references: Sequence[RunAudit]) -> None:
    """Every run must plant the target's canaries, in the same order (membership may differ)."""
    expected = [_canary_key(c) for c in target.canaries.canaries]
    for ref in references:
        if ref.canaries.kind != target.canaries.kind or len(ref.canaries) != len(expected):
            raise InputError(
                f"{ref.directory} planted {len(ref.canaries)} {ref.canaries.kind} canaries, the target "
                f"{len(expected)} {target.canaries.kind} ones; every run must use the target's canaries "
                "(CanarySet.with_membership gives the same canaries another split)"
            )
        differ = [i for i, c in enumerate(ref.canaries.canaries) if _canary_key(c) != expected[i]]
        if differ:
            raise InputError(
                f"{ref.directory} planted different canaries than the target ({len(differ)} of {len(expected)} "
                f"differ, first at index {differ[0]}); every run must use the target's canaries in the same order "
                "(CanarySet.with_membership gives the same canaries another split)"
            )


def _check_splits(target: RunAudit, references: Sequence[RunAudit]) -> None:
    """A reference run with the target's own split adds nothing per canary; refuse it."""
    import numpy as np

    same = [str(r.directory) for r in references if np.array_equal(r.canaries.is_member, target.canaries.is_member)]
    if same:
        raise InputError(
            f"reference run(s) {', '.join(same)} have exactly the target's membership split; multi-run LiRA "
            "compares each canary in and out of training, so every reference run needs its own split "
            "(CanarySet.with_membership with a draw from another seed)"
        )
