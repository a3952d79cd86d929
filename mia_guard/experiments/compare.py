"""``mia-guard compare``: the demo trained under each defense, every run audited the same way.

:func:`run_comparison` trains the embedded demo (byte GPT-2, stdlib sources, credential
canaries; :mod:`mia_guard.experiments.demo`) once per defense of :mod:`mia_guard.experiments.compare_defenses`,
with the same canaries, data order, initialisation, steps and learning rate. Every run
is audited by :class:`~mia_guard.callbacks.MIAAuditCallback` with the same
:class:`~mia_guard.audit.auditor.Auditor` settings (the demo's attacks, the ``"privacy"``
analysis at δ = ``delta``; step 0 is the reference model), and its utility is measured
as perplexity on held-out stdlib chunks (:mod:`mia_guard.experiments.compare_utility`).

Rows beyond the trained defenses:

* ``none+<setting>``: the ``none`` model seen through an API that perturbs its outputs
  (:class:`~mia_guard.defenses.PerturbedOutputModel`, :data:`OUTPUT_SETTINGS`): the
  step-0 and final models are both audited through the wrapper, so the calibrated attacks'
  reference is perturbed the same way; utility is the perplexity of what the API returns.
* ``goldfish_supervised`` / ``goldfish_dropped``: the goldfish run's audits restricted to
  the secret tokens that did / did not get a training loss
  (:func:`~mia_guard.defenses.goldfish_scored_mask`). Left-aligning the kept tokens breaks
  the position alignment that sequence LiRA models, so these rows run the other attacks.

Output layout::

    <output_dir>/comparison.{json,md}   the leakage-utility table (schema-versioned JSON)
    <output_dir>/leakage_utility.png    best attack's AUC and TPR@1%FPR against held-out perplexity
    <output_dir>/logs/<row>/            one TensorBoard run per row (tensorboard --logdir <output_dir>/logs)
    <output_dir>/runs/<row>/            audit history and report (trained rows: also model/)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..audit.auditor import DEFAULT_FPRS, Auditor
from ..audit.result import AuditResult
from ..canaries.canary_set import CanarySet
from ..scoring.token_stats import STAT_FIELDS, TokenStats
from ..stats.estimate import Estimate
from .compare_defenses import DEFENSES, GOLDFISH, OUTPUT_SETTINGS, Defense, check_names
from .compare_report import ComparisonRow
from .compare_utility import chunk_nll, held_out_rows, perplexity
from .demo import (
    DEMO_ATTACKS,
    MAX_LENGTH,
    DemoConfig,
    _cpu_threads,
    build_model,
    build_trainer,
    build_training_texts,
    resolve_device,
)
from .demo_assets import byte_tokenizer, tokenize

#: The FPR of the table's TPR column.
TABLE_FPR = 0.01
#: Defenses trained by default (all of :data:`~mia_guard.experiments.compare_defenses.DEFENSES`).
DEFAULT_DEFENSES = tuple(DEFENSES)
#: Attacks of the goldfish position views (sequence LiRA needs aligned positions).
POSITION_VIEW_ATTACKS = tuple(a for a in DEMO_ATTACKS if a != "seq_lira")


@dataclass
class CompareConfig:
    """What to compare and at what size.

    Attributes:
        defenses: names in :data:`~mia_guard.experiments.compare_defenses.DEFENSES`, trained in this order.
        output_settings: names in :data:`OUTPUT_SETTINGS` audited on the ``none`` model
            (only when ``"none"`` is among ``defenses``).
        steps: optimizer steps of every run.
        every: audit every this many steps (plus step 0 and the last); ``None`` = ``steps // 2``.
            The defaults (800 steps, 8 defenses) take about 5 minutes of CPU time (measured 318 s).
        canaries: credential canaries (a fair coin makes each a member).
        repetitions: times each member is inserted into the training data.
        corpus_chunks: 120-character stdlib chunks in the training data.
        heldout_chunks: held-out chunks for the perplexity.
        n_layer, n_embd, n_head, batch_size, learning_rate: as in :class:`~mia_guard.experiments.demo.DemoConfig`.
        delta: δ of the audits' ε lower bounds and of the DP guarantees.
        confidence: level of every interval and bound.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: torch CPU threads while training and auditing on the CPU (1 is fastest for
            a model this small, see :class:`~mia_guard.experiments.demo.DemoConfig`).
        output_dir: where everything is written.
        seed: canaries, split, data order, initialisation, audit folds.
        progress: progress bars while training.
    """

    defenses: Sequence[str] = DEFAULT_DEFENSES
    output_settings: Sequence[str] = tuple(OUTPUT_SETTINGS)
    steps: int = 800
    every: int | None = None
    canaries: int = 256
    repetitions: int = 8
    corpus_chunks: int = 2000
    heldout_chunks: int = 200
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-3
    delta: float = 1e-5
    confidence: float = 0.95
    device: str = "auto"
    threads: int = 1
    output_dir: Path = Path("mia_compare")
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        self.defenses = check_names(self.defenses, DEFENSES, "defense")
        self.output_settings = check_names(self.output_settings, OUTPUT_SETTINGS, "output setting")
        if not self.defenses:
            raise ValueError("give at least one defense to train")
        self.output_dir = Path(self.output_dir)
        if self.every is None:
            self.every = max(1, self.steps // 2)
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.heldout_chunks < 2:
            raise ValueError(f"heldout_chunks must be at least 2 (for an interval), got {self.heldout_chunks}")
        self.demo_config("none")  # validates the sizes with the demo's own checks

    def demo_config(self, run: str) -> DemoConfig:
        """The demo's config of one run (its files under ``<output_dir>/runs/<run>``)."""
        return DemoConfig(
            steps=self.steps, every=self.every, canaries=self.canaries, repetitions=self.repetitions,
            corpus_chunks=self.corpus_chunks, n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head,
            batch_size=self.batch_size, learning_rate=self.learning_rate, device=self.device, threads=self.threads,
            output_dir=self.output_dir / "runs" / run, seed=self.seed, progress=self.progress,
        )

    def auditor(self, canaries: Any, tokenizer: Any, attacks: Sequence[str] = DEMO_ATTACKS) -> Auditor:
        """A fresh Auditor with the comparison's settings: every row is audited by one of these."""
        return Auditor(
            canaries, tokenizer, attacks=attacks, fprs=DEFAULT_FPRS, confidence=self.confidence,
            analyses=("privacy",), analysis_options={"delta": self.delta}, seed=self.seed,
        )

    @property
    def logdir(self) -> Path:
        return self.output_dir / "logs"


@dataclass
class ComparisonOutcome:
    """What :func:`run_comparison` produced: the rows, the files and the time it took.

    ``seconds`` holds ``total`` (wall) and ``cpu`` (process CPU time, all threads).
    """

    rows: list[ComparisonRow]
    paths: dict[str, Path]
    logdir: Path
    seconds: dict[str, float]

    def row(self, name: str) -> ComparisonRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no comparison row {name!r}; rows: {[r.name for r in self.rows]}")


def leakage_row(
    name: str, label: str, kind: str, result: AuditResult, ppl: Estimate, clock: "_Clock",
    dp_epsilon: float | None = None, notes: Sequence[str] = (),
) -> ComparisonRow:
    """A table row from the final audit ``result`` of a run, its held-out perplexity and its time."""
    best = result.best_attack()
    if best is None:
        missing = Estimate(math.nan, math.nan, math.nan, 0.0, "no attack ran")
        auc = tpr = missing
        n = 0
    else:
        metrics = result.metrics[best]
        auc, tpr, n = metrics.auc, metrics.tpr_at_fpr[TABLE_FPR], metrics.n_members + metrics.n_nonmembers
    privacy = result.extras.get("privacy") or {}
    one_run = privacy.get("one_run") or {}
    return ComparisonRow(
        name=name, label=label, kind=kind, best_attack=best, auc=auc, tpr=tpr,
        epsilon_lb=privacy.get("epsilon_lb_one_run"), epsilon_lb_guarantee=one_run.get("guarantee"),
        dp_epsilon=dp_epsilon, perplexity=ppl, n_canaries=n, seconds=clock.wall(), cpu_seconds=clock.cpu(),
        notes=[*notes, *(f"{a} skipped: {why}" for a, why in result.skipped.items())],
    )


# ---------------------------------------------------------------------------- the comparison
def run_comparison(config: CompareConfig, echo: Callable[[str], None] = print) -> ComparisonOutcome:
    """Train and audit every defense, add the output and goldfish views, write the table, plot and logs."""
    from .compare_report import comparison_table, write_comparison

    clock = _Clock()
    device = resolve_device(config.device)
    tokenizer = byte_tokenizer()
    canaries, texts = build_training_texts(config.demo_config("none"))
    heldout = held_out_rows(tokenizer, config.corpus_chunks, config.heldout_chunks, config.seed, texts)
    n_members = int(canaries.is_member.sum())
    echo(
        f"mia_guard compare: {len(config.defenses)} defenses x {config.steps} steps on {device}; {len(canaries)} "
        f"canaries ({n_members} members inserted {config.repetitions}x each) in {config.corpus_chunks} stdlib "
        f"chunks; utility = perplexity on {len(heldout)} held-out chunks"
    )
    if config.output_settings and "none" not in config.defenses:
        echo("output perturbation is audited on the 'none' model, which is not in --defenses: skipped")
    rows: list[ComparisonRow] = []
    with _cpu_threads(config.threads if device == "cpu" else None):
        for index, name in enumerate(config.defenses, start=1):
            run = _train_and_audit(DEFENSES[name], config, canaries, texts, tokenizer, heldout, device)
            new = [run.row]
            if name == "none":
                new += _output_rows(run, config, canaries, tokenizer, heldout)
            if name == "goldfish":
                new += _goldfish_rows(run, config, canaries, tokenizer)
            for row in new:
                echo(f"[{index}/{len(config.defenses)}] {_progress_line(row)}")
            rows += new
    seconds = {"total": clock.wall(), "cpu": clock.cpu()}
    paths = write_comparison(rows, config, seconds)
    echo("")
    echo(comparison_table(rows, config.confidence))
    echo("")
    echo(f"table:       {paths['markdown']}  (and {paths['json'].name})")
    echo(f"plot:        {paths['png']}")
    echo(f"tensorboard: tensorboard --logdir {config.logdir}")
    return ComparisonOutcome(rows, paths, config.logdir, seconds)


def _progress_line(row: ComparisonRow) -> str:
    return (
        f"{row.label}: best attack {row.best_attack} AUC {row.auc}, held-out perplexity {row.perplexity} "
        f"({row.seconds:.0f} s, {row.cpu_seconds:.0f} s CPU)"
    )


class _Clock:
    """Wall and process CPU seconds since construction."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self._wall

    def cpu(self) -> float:
        return time.process_time() - self._cpu


# ---------------------------------------------------------------------------- one trained defense
@dataclass
class _Run:
    """A trained defense: its auditor (with the history) and the trained model."""

    auditor: Auditor
    model: Any
    row: ComparisonRow


def _train_and_audit(
    defense: Defense, config: CompareConfig, canaries: Any, texts: list[str], tokenizer: Any,
    heldout: list[dict], device: str,
) -> _Run:
    from ..callbacks import MIAAuditCallback
    from ..scoring.guards import unwrap_model

    clock = _Clock()
    demo_config = config.demo_config(defense.name)
    plan = defense.plan(demo_config, texts, config.delta)
    auditor = config.auditor(canaries, tokenizer)
    callback = MIAAuditCallback(
        auditor=auditor, every_n_steps=config.every, output_dir=demo_config.output_dir / "mia",
        tensorboard=config.logdir / defense.name, progress=False,
    )
    swap = {"trainer_cls": plan.trainer_cls} if plan.trainer_cls is not None else {}
    trainer = build_trainer(
        demo_config, [callback], tokenize(plan.texts, tokenizer, MAX_LENGTH), tokenizer, device,
        model=plan.model, data_collator=plan.data_collator, args_overrides=plan.args_overrides,
        tensorboard_dir=config.logdir / defense.name, **swap, **plan.trainer_kwargs,
    )
    trainer.train()
    model = unwrap_model(trainer.model)
    _save_quietly(model, demo_config.output_dir / "model")
    ppl = perplexity(chunk_nll(model, heldout), config.confidence)
    dp_epsilon = float(trainer.dp_epsilon()) if hasattr(trainer, "dp_epsilon") else None
    row = leakage_row(
        defense.name, defense.label, "trained", auditor.history.last, ppl, clock,
        dp_epsilon=dp_epsilon, notes=plan.notes,
    )
    return _Run(auditor, model, row)


def _save_quietly(model: Any, directory: Path) -> None:
    """``save_pretrained`` without transformers' per-shard progress bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(directory)
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------- views of a trained run
def _audit_view(
    name: str, config: CompareConfig, auditor: Auditor, audits: Sequence[tuple[int, Any]]
) -> AuditResult:
    """Audit each ``(step, model or TokenStats)`` in order; TensorBoard run and history under ``name``."""
    from ..callbacks.sinks import TensorBoardSink

    sink = TensorBoardSink(
        config.logdir / name, [a.name for a in auditor.attacks], auditor.fprs, auditor.canaries.is_member
    )
    try:
        for step, subject in audits:
            if isinstance(subject, TokenStats):
                result = auditor.evaluate(subject, step)
            else:
                result = auditor.audit(subject, step)
            sink.write(result)
    finally:
        sink.close()
    auditor.history.save(config.output_dir / "runs" / name / "history.json")
    return auditor.history.last


def _output_rows(
    run: _Run, config: CompareConfig, canaries: Any, tokenizer: Any, heldout: list[dict]
) -> list[ComparisonRow]:
    """The ``none`` model through each output perturbation; the reference (step 0) through the same one."""
    from ..defenses import PerturbedOutputModel

    initial = build_model(config.demo_config("none"))
    last_step = run.auditor.history.last.step
    rows = []
    for setting in config.output_settings:
        clock = _Clock()
        options = OUTPUT_SETTINGS[setting]
        view = PerturbedOutputModel(run.model, **options)
        audits = [(0, PerturbedOutputModel(initial, **options)), (last_step, view)]
        result = _audit_view(f"none+{setting}", config, config.auditor(canaries, tokenizer), audits)
        ppl = perplexity(chunk_nll(view, heldout), config.confidence)
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        rows.append(leakage_row(
            f"none+{setting}", f"no defense, API {described}", "output", result, ppl, clock,
        ))
    return rows


def _goldfish_rows(run: _Run, config: CompareConfig, canaries: Any, tokenizer: Any) -> list[ComparisonRow]:
    """The goldfish run's step-0 and final audits on the supervised, then the dropped, secret tokens."""
    from ..defenses import goldfish_scored_mask

    supervised = goldfish_scored_mask(run.auditor.encoded, **GOLDFISH)
    first, last = run.auditor.history.results[0], run.auditor.history.last
    rows = []
    for view, keep in (("supervised", supervised), ("dropped", ~supervised)):
        clock = _Clock()
        cells = first.stats.mask & keep
        has_tokens = cells.any(dim=1).numpy()
        subset = _canary_subset(canaries, np.flatnonzero(has_tokens))
        audits = [(r.step, token_view(r.stats, cells).subset(has_tokens)) for r in (first, last)]
        auditor = config.auditor(subset, tokenizer, attacks=POSITION_VIEW_ATTACKS)
        result = _audit_view(f"goldfish_{view}", config, auditor, audits)
        left_out = int((~has_tokens).sum())
        notes = [f"{left_out} canaries without {view} secret tokens left out"] if left_out else []
        rows.append(leakage_row(
            f"goldfish_{view}", f"goldfish, {view} tokens only", "positions", result, run.row.perplexity, clock,
            notes=notes,
        ))
    return rows


def token_view(stats: TokenStats, cells: torch.Tensor) -> TokenStats:
    """``stats`` restricted to ``cells`` (bool ``[N, T]``), each row's kept cells left-aligned.

    The result keeps the TokenStats layout (scored positions a prefix of each row, padding 0),
    so every attack reads it; column ``j`` becomes the ``j``-th *kept* token of the canary.
    """
    if cells.shape != stats.mask.shape:
        raise ValueError(f"cells has shape {tuple(cells.shape)}, the statistics {tuple(stats.mask.shape)}")
    keep = cells & stats.mask
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    mask = keep.gather(1, order)
    fields = {name: torch.where(mask, stats.field(name).gather(1, order), 0.0) for name in STAT_FIELDS}
    return TokenStats(**fields, mask=mask)


def _canary_subset(canaries: CanarySet, index: np.ndarray) -> CanarySet:
    return CanarySet(
        [canaries[int(i)] for i in index], canaries.is_member[index], kind=canaries.kind, seed=canaries.seed,
        split=canaries.split, template=canaries.template,
    )
