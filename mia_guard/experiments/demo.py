"""The embedded demo: watch a small language model memorize planted credentials.

:func:`run_demo` builds a small GPT-2 over bytes, plants credential canaries
(``API_SECRET_KEY = "..."``) in chunks of the Python standard library's own source
files, trains with the real Hugging Face ``Trainer`` and audits every ``every`` steps
with :class:`~mia_guard.callbacks.MIAAuditCallback`. It prints the leakage table of each
audit, writes TensorBoard logs (training loss and leakage in one logdir) and the report,
and judges the final model with the bundled example release policy. Nothing is downloaded.

Output directory layout::

    <output_dir>/tensorboard/   training loss + mia/... leakage figures (tensorboard --logdir)
    <output_dir>/mia/           history.json, audits.jsonl, canaries.json, report.{json,md}, *.png
    <output_dir>/model/         the trained model and tokenizer (save_pretrained)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import Trainer, TrainingArguments
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..audit.auditor import DEFAULT_ATTACKS
from ..callbacks import MIAAuditCallback
from ..canaries.canary_set import CanarySet
from ..gate import ReleasePolicy, example_policy_path
from .demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize

DEVICES = ("auto", "cpu", "cuda")
#: The demo's attacks: the Auditor's defaults, always with the correlation-aware sequence LiRA.
DEMO_ATTACKS = tuple(dict.fromkeys((*DEFAULT_ATTACKS, "seq_lira")))
MAX_LENGTH = 128
#: Characters per stdlib chunk of the training text.
CHUNK_CHARS = 120


@dataclass
class DemoConfig:
    """Sizes of the demo run (the defaults take about 75 s of CPU time; 185 s wall measured on a shared 2-core machine).

    Attributes:
        steps: optimizer steps.
        every: audit every this many steps (plus step 0 and the last step).
        canaries: number of credential canaries (a fair coin makes each a member).
        repetitions: times each member canary is inserted into the training data.
        corpus_chunks: 120-character chunks of stdlib source in the training data.
        n_layer, n_embd, n_head: GPT-2 size.
        batch_size, learning_rate: training hyper-parameters.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        output_dir: where everything is written.
        seed: seeds the canaries, their split, the data order and the model.
        progress: progress bars (training and audit scoring).
        attacks: membership-inference attacks to run.
        threads: torch CPU threads while training on the CPU. The default 1 is the fastest
            for a model this small: more threads only add synchronisation (on a busy
            2-core machine, 2 threads measured 4-28x slower than 1).
        overhead_budget: when set, audits run as often as keeps them within this fraction
            of training time (``every`` is then not used); see ``MIAAuditCallback``.
    """

    steps: int = 800
    every: int = 100
    canaries: int = 256
    repetitions: int = 8
    corpus_chunks: int = 2000
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-3
    device: str = "auto"
    output_dir: Path = Path("mia_demo")
    seed: int = 0
    progress: bool = True
    attacks: Sequence[str] = DEMO_ATTACKS
    threads: int = 1
    overhead_budget: float | None = None

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        sizes = ("steps", "every", "repetitions", "corpus_chunks", "n_layer", "n_embd", "n_head", "batch_size")
        for name in (*sizes, "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.canaries < 8:
            raise ValueError(f"canaries must be at least 8 (to have members and non-members), got {self.canaries}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")


@dataclass
class DemoOutcome:
    """What a demo run produced.

    Attributes:
        history: the AuditHistory (the leakage curve).
        decision: the release gate's decision on the final audit.
        report: report file paths (``json``, ``markdown``, ``leakage``, ``roc``).
        tensorboard_dir, model_dir: where the TensorBoard logs and the trained model are.
        seconds: wall time of ``setup``, ``train`` (including audits) and ``total``.
        device: the device the model trained on.
    """

    history: Any
    decision: Any
    report: dict[str, Path]
    tensorboard_dir: Path
    model_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cuda"`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return device


def build_training_texts(config: DemoConfig) -> tuple[Any, list[str]]:
    """The canaries and the training texts: stdlib chunks with each member inserted ``repetitions`` times."""
    canaries = CanarySet.generate(config.canaries, "code_credential", seed=config.seed)
    corpus = stdlib_corpus(max_chars=config.corpus_chunks * CHUNK_CHARS, chunk_chars=CHUNK_CHARS, seed=config.seed)
    return canaries, canaries.insert_into(corpus, repetitions=config.repetitions)


def build_training_rows(config: DemoConfig, tokenizer: Any) -> tuple[Any, list[dict]]:
    """The canaries and the tokenized training rows (stdlib chunks with the members inserted)."""
    canaries, texts = build_training_texts(config)
    return canaries, tokenize(texts, tokenizer, MAX_LENGTH)


def build_model(config: DemoConfig) -> Any:
    """The demo's GPT-2, freshly initialised from ``config.seed`` (the same config gives the same weights)."""
    return tiny_gpt2(
        n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, n_positions=MAX_LENGTH, seed=config.seed
    )


def build_callback(config: DemoConfig, canaries: Any, tokenizer: Any) -> MIAAuditCallback:
    """The demo's audit callback: every ``config.every`` steps (or within ``config.overhead_budget``),
    judged by the bundled example policy."""
    return MIAAuditCallback(
        canaries,
        tokenizer,
        every_n_steps=config.every if config.overhead_budget is None else None,
        overhead_budget=config.overhead_budget,
        attacks=config.attacks,
        output_dir=config.output_dir / "mia",
        tensorboard=config.output_dir / "tensorboard",
        policy=ReleasePolicy.from_toml(example_policy_path()),
        progress=config.progress,
    )


def build_trainer(
    config: DemoConfig,
    callbacks: Sequence[Any],
    rows: list[dict],
    tokenizer: Any,
    device: str,
    *,
    model: Any = None,
    data_collator: Any = None,
    trainer_cls: type = Trainer,
    args_overrides: dict[str, Any] | None = None,
    tensorboard_dir: Path | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """The Trainer of the demo: constant learning rate, TensorBoard logging into ``<output_dir>/tensorboard``.

    The keywords swap one ingredient, as a defense does (``mia-guard compare``): ``model``
    (default :func:`build_model`), ``data_collator`` (default: every token labelled),
    ``trainer_cls`` (a ``Trainer`` subclass, given ``trainer_kwargs``), ``args_overrides``
    (``TrainingArguments`` fields, e.g. ``weight_decay``) and ``tensorboard_dir``.
    """
    from torch.utils.tensorboard import SummaryWriter

    args_kwargs = dict(
        output_dir=str(config.output_dir / "trainer"),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=max(1, config.every // 5),
        save_strategy="no",
        report_to="none",  # the TensorBoard callback below writes to our logdir
        disable_tqdm=not config.progress,
        use_cpu=device == "cpu",
        seed=config.seed,
        dataloader_num_workers=0,
    )
    args_kwargs.update(args_overrides or {})
    writer = SummaryWriter(log_dir=str(tensorboard_dir or config.output_dir / "tensorboard"))
    trainer = trainer_cls(
        model=model if model is not None else build_model(config),
        args=TrainingArguments(**args_kwargs),
        train_dataset=rows,
        data_collator=data_collator or CausalLMCollator(max_length=MAX_LENGTH),
        processing_class=tokenizer,
        callbacks=[TensorBoardCallback(tb_writer=writer), *callbacks],
        **trainer_kwargs,
    )
    # the leakage tables are the console output; the Trainer's dicts of loss values go to TensorBoard only
    trainer.remove_callback(PrinterCallback)
    if config.progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ProgressBarOnly())
    return trainer


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoOutcome:
    """Train, audit, report and gate; ``echo`` receives every line meant for the user."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    tokenizer = byte_tokenizer()
    canaries, rows = build_training_rows(config, tokenizer)
    n_members = int(canaries.is_member.sum())
    echo(
        f"mia_guard demo: {len(canaries)} credential canaries ({n_members} members inserted {config.repetitions}x "
        f"each, {len(canaries) - n_members} held out) in {config.corpus_chunks} chunks of Python stdlib source; "
        f"GPT-2 {config.n_layer} layers x {config.n_embd} on {device}, {config.steps} steps, audit every {config.every}"
    )
    callback = build_callback(config, canaries, tokenizer)
    trainer = build_trainer(config, [callback], rows, tokenizer, device)
    setup_seconds = time.perf_counter() - started
    with _echo_audits(echo, config.progress), _cpu_threads(config.threads if device == "cpu" else None):
        trainer.train()
    train_seconds = time.perf_counter() - started - setup_seconds
    model_dir = config.output_dir / "model"
    trainer.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    history, decision = callback.history, callback.last_decision
    report = callback.report_paths
    for line in _summary(history, decision, config, report, model_dir):
        echo(line)
    return DemoOutcome(
        history=history,
        decision=decision,
        report=report,
        tensorboard_dir=config.output_dir / "tensorboard",
        model_dir=model_dir,
        seconds={"setup": setup_seconds, "train": train_seconds, "total": time.perf_counter() - started},
        device=device,
    )


# ---------------------------------------------------------------------------- console output
class ProgressBarOnly(ProgressCallback):
    """The Trainer's progress bar without the printed dictionaries of logged values."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return control


class _EchoHandler(logging.Handler):
    """Sends the audit tables the callback logs to ``echo`` (above any progress bar)."""

    def __init__(self, echo: Callable[[str], None], progress: bool) -> None:
        super().__init__(logging.INFO)
        self.echo = echo
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)
        else:
            self.echo(message)


@contextlib.contextmanager
def _echo_audits(echo: Callable[[str], None], progress: bool) -> Iterator[None]:
    source = logging.getLogger("mia_guard.callbacks")
    handler = _EchoHandler(echo, progress)
    level, propagate = source.level, source.propagate
    source.addHandler(handler)
    source.setLevel(logging.INFO)
    source.propagate = False
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(level)
        source.propagate = propagate


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (unchanged when ``None``), then restore the setting."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _summary(history: Any, decision: Any, config: DemoConfig, report: dict[str, Path], model_dir: Path) -> list[str]:
    first, last = history.results[0], history.results[-1]
    best = last.best_attack()
    lines = [""]
    if best is not None and best in first.metrics:
        lines.append(
            f"leakage over training (best attack {best!r}): AUC {first.metrics[best].auc} at step {first.step} -> "
            f"{last.metrics[best].auc} at step {last.step}"
        )
    if decision is not None:
        lines += [
            "",
            decision.explain(),
            f"(The demo itself ends with exit 0. In CI, `mia-guard gate {report['json']} --policy "
            f"{example_policy_path()}` judges this model and exits {decision.exit_code}.)",
        ]
    lines += [
        "",
        f"report:      {report['markdown']}  (and report.json, leakage.png, roc.png)",
        f"history:     {config.output_dir / 'mia' / 'history.json'}",
        f"model:       {model_dir}  (mia-guard audit --model {model_dir} "
        f"--canaries {config.output_dir / 'mia' / 'canaries.json'})",
        f"tensorboard: tensorboard --logdir {config.output_dir / 'tensorboard'}",
    ]
    return lines
