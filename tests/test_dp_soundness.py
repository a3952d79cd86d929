"""Soundness of the privacy figures on real DP-SGD runs, and their power without DP.

A DP-SGD run at accountant ε with many canary repetitions is audited with the
``"privacy"`` analysis at the run's δ: the one-run lower bound must never exceed ε.
Without DP, the same kind of run must give a clearly positive bound.

``pytest tests/test_dp_soundness.py -s`` prints the figures of every run.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from mia_guard import Auditor, CanarySet
from mia_guard.experiments.demo_assets import CausalLMCollator, byte_tokenizer, stdlib_corpus, tiny_gpt2, tokenize

torch.set_num_threads(1)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha:UserWarning"),
]

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def audit_run(
    *,
    target_epsilon: float | None,
    steps: int,
    repetitions: int,
    seed: int,
    n_canaries: int = 128,
    corpus_chunks: int = 600,
    learning_rate: float = 5e-3,
    output_dir: str,
) -> dict:
    """Train a tiny byte GPT-2 (DP-SGD at ``target_epsilon``, or plain when ``None``) and audit it.

    The canaries are drawn by fair coins (``split="coin"``) and members inserted
    ``repetitions`` times. DP runs use Poisson-sampled logical batches of 64; δ of the
    bounds is the DP run's δ (``1 / (10 N)``), also for plain runs.
    """
    from transformers import Trainer, TrainingArguments

    from mia_guard.defenses.dp import DPConfig, DPTrainer

    tokenizer = byte_tokenizer()
    canaries = CanarySet.generate(n_canaries, "code_credential", seed=seed, split="coin")
    texts = canaries.insert_into(stdlib_corpus(max_chars=corpus_chunks * 120, seed=seed), repetitions=repetitions)
    rows = tokenize(texts, tokenizer, 128)
    model = tiny_gpt2(seed=seed)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=2,
        max_steps=steps,
        learning_rate=learning_rate,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        logging_steps=10**6,
    )
    common = dict(model=model, args=args, train_dataset=rows, data_collator=CausalLMCollator())
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if target_epsilon is None:
        trainer = Trainer(**common)
        delta, accountant_epsilon = 1.0 / (10 * len(rows)), math.inf
    else:
        trainer = DPTrainer(**common, dp_config=DPConfig(target_epsilon=target_epsilon, max_grad_norm=1.0))
        delta = trainer.dp_delta
    trainer.train()
    if target_epsilon is not None:
        accountant_epsilon = trainer.dp_epsilon()
    auditor = Auditor(
        canaries, tokenizer, attacks=ATTACKS, reference="none", seed=seed,
        analyses=["privacy"], analysis_options={"delta": delta},
    )
    result = auditor.audit(model.eval(), step=steps)
    privacy = result.extras["privacy"]
    figures = {
        "seed": seed,
        "dp": target_epsilon is not None,
        "epsilon_accountant": accountant_epsilon,
        "delta": delta,
        "repetitions": repetitions,
        "steps": steps,
        "epsilon_lb_one_run": privacy["epsilon_lb_one_run"],
        "one_run": {k: privacy["one_run"][k] for k in ("attack", "m", "r", "v", "ceiling", "guarantee")},
        "epsilon_lb_two_point": privacy["epsilon_lb_two_point"],
        "best_auc": max(m.auc.value for m in result.metrics.values()),
        "exposure_mean": privacy["exposure_mean"],
    }
    print(figures)
    return figures


def test_one_run_bound_stays_below_the_accountants_epsilon(tmp_path):
    run = audit_run(target_epsilon=1.0, steps=10, repetitions=16, seed=0, output_dir=str(tmp_path))
    assert run["epsilon_accountant"] == pytest.approx(1.0, abs=0.02)  # the run spent its budget
    assert run["one_run"]["guarantee"] == "theorem"
    assert run["one_run"]["ceiling"] > run["epsilon_accountant"]  # the canaries could have shown more
    assert run["epsilon_lb_one_run"] <= run["epsilon_accountant"]


def test_same_audit_shows_leakage_without_dp(trained_lm):
    """The fixture run (16 repetitions, no DP): the auditor that stays below ε under DP is not blind."""
    auditor = Auditor(
        trained_lm.canaries, trained_lm.tokenizer, attacks=ATTACKS, reference="none",
        analyses=["privacy"], analysis_options={"delta": 1e-5},
    )
    privacy = auditor.audit(trained_lm.model, step=300).extras["privacy"]
    assert privacy["one_run"]["guarantee"] == "theorem"
    assert privacy["epsilon_lb_one_run"] > 1.5
    assert privacy["epsilon_lb_two_point"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_one_run_bound_is_sound_over_seeds(tmp_path, seed):
    dp = audit_run(target_epsilon=1.0, steps=60, repetitions=32, seed=seed, output_dir=str(tmp_path / "dp"))
    assert dp["epsilon_lb_one_run"] <= dp["epsilon_accountant"]
    plain = audit_run(target_epsilon=None, steps=60, repetitions=32, seed=seed, output_dir=str(tmp_path / "plain"))
    assert plain["epsilon_lb_one_run"] > max(dp["epsilon_lb_one_run"], 0.75)
