"""MIAAuditCallback inside real Hugging Face Trainer runs (tiny byte GPT-2, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from trainer_runs import canaries, make_trainer

from mia_guard import AuditHistory, Auditor, CanarySet
from mia_guard.experiments.demo_assets import byte_tokenizer
from mia_guard.callbacks import MIAAuditCallback
from mia_guard.report.files import load_report
from mia_guard.scoring.guards import opacus_hooks_disabled, unwrap_model


def _callback(tmp_path, **options) -> MIAAuditCallback:
    options.setdefault("progress", False)
    options.setdefault("tensorboard", False)
    return MIAAuditCallback(canaries(), output_dir=tmp_path / "mia", **options)


@pytest.mark.parametrize(
    ("max_steps", "every", "expected"),
    [(7, 3, [0, 3, 6, 7]), (6, 3, [0, 3, 6]), (5, None, [0, 5])],
)
def test_audits_at_step_zero_every_n_and_train_end_only(tmp_path, max_steps, every, expected):
    callback = _callback(tmp_path, every_n_steps=every)
    make_trainer(tmp_path, [callback], max_steps=max_steps).train()
    assert callback.history.steps == expected
    saved = AuditHistory.load(tmp_path / "mia" / "history.json")
    assert saved.steps == expected


def test_audit_on_evaluate_adds_evaluation_steps_without_duplicates(tmp_path):
    callback = _callback(tmp_path, every_n_steps=4, audit_on_evaluate=True, audit_on_train_begin=False)
    make_trainer(tmp_path, [callback], max_steps=4, eval_steps=2).train()
    # eval at 2 and 4; step 4 is also a periodic audit and the final step: audited once
    assert callback.history.steps == [2, 4]


def test_callback_does_not_change_training(tmp_path):
    """Same seed, dropout on: the run with audits ends with exactly the weights of the run without."""
    plain = make_trainer(tmp_path / "plain", max_steps=5, dropout=0.2)
    plain.train()
    callback = _callback(tmp_path, every_n_steps=2)
    audited = make_trainer(tmp_path / "audited", [callback], max_steps=5, dropout=0.2)
    audited.train()
    assert callback.history.steps == [0, 2, 4, 5]
    plain_params = dict(plain.model.named_parameters())
    for name, param in audited.model.named_parameters():
        assert torch.equal(param, plain_params[name]), name
    assert audited.model.training == plain.model.training
    # the audits changed the model: the untrained and final canary losses differ
    first, last = callback.history.results[0], callback.history.results[-1]
    assert first.member_nll.value != last.member_nll.value


def test_writes_history_canaries_jsonl_and_report(tmp_path):
    callback = _callback(tmp_path, every_n_steps=3, policy={"max_auc": 0.6})
    make_trainer(tmp_path, [callback], max_steps=4).train()
    out = tmp_path / "mia"
    assert CanarySet.load(out / "canaries.json").content_hash == callback.canaries.content_hash
    lines = [json.loads(line) for line in (out / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 3, 4]
    assert lines[-1]["scalars"]["loss/auc"] == pytest.approx(callback.history.last.metrics["loss"].auc.value)
    assert lines[-1]["gate"] == callback.last_decision.verdict
    report = load_report(out / "report.json")
    assert [a["step"] for a in report["audits"]] == [0, 3, 4]
    for name in ("report.md", "leakage.png", "roc.png"):
        assert (out / name).stat().st_size > 0


def test_blocking_policy_stops_training(tmp_path, trained_lm):
    """A model that memorized its canaries is blocked at its first audit, and training stops there."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(trained_lm.directory)
    callback = MIAAuditCallback(
        trained_lm.canaries,
        every_n_steps=2,
        audit_on_train_begin=False,
        policy={"max_auc": 0.6},
        stop_on_blocked=True,
        output_dir=tmp_path / "mia",
        progress=False,
        tensorboard=False,
    )
    trainer = make_trainer(
        tmp_path, [callback], model=model, canary_set=trained_lm.canaries, max_steps=10, learning_rate=1e-6
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert callback.history.steps == [2]
    assert callback.stopped_early
    assert callback.last_decision.verdict == "blocked"
    report = load_report(tmp_path / "mia" / "report.json")
    assert report["gate"]["verdict"] == "blocked"


def test_state_is_json_and_rebuilds_the_callback(tmp_path):
    callback = _callback(tmp_path, every_n_steps=3, attacks=["loss", "min_k"], fprs=[0.1], analyses=["privacy"],
                         n_folds=3, seed=4, tokenizer=byte_tokenizer())
    make_trainer(tmp_path, [callback], max_steps=3).train()
    state = json.loads(json.dumps(callback.state()))
    rebuilt = MIAAuditCallback(**state["args"])
    assert rebuilt.canaries.content_hash == callback.canaries.content_hash
    assert rebuilt.every_n_steps == 3 and str(rebuilt.output_dir) == str(tmp_path / "mia")
    assert rebuilt.config == callback.config  # every audit option, analyses, folds and seed included
    assert (rebuilt.config.analyses, rebuilt.config.n_folds, rebuilt.config.seed) == (("privacy",), 3, 4)
    identity = state["attributes"]["tokenizer_identity"]
    assert identity["class"] == type(byte_tokenizer()).__name__ and len(identity["canary_tokens_sha256"]) == 64


def test_audit_options_conflicts_and_misspellings_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"unknown option 'every_n_step' \(did you mean 'every_n_steps'\?\)"):
        MIAAuditCallback(canaries(), every_n_step=5)
    with pytest.raises(TypeError, match=r"unknown option 'attack' \(did you mean 'attacks'\?\)"):
        MIAAuditCallback(canaries(), attack=["loss"])
    auditor = Auditor(canaries(), byte_tokenizer(), attacks=["loss"])
    with pytest.raises(TypeError, match="either auditor"):
        MIAAuditCallback(auditor=auditor, seed=3)
    assert MIAAuditCallback(auditor=auditor).config is auditor.config


def test_resume_from_checkpoint_continues_the_curve(tmp_path):
    first = _callback(tmp_path, every_n_steps=2)
    make_trainer(tmp_path, [first], max_steps=6, save_strategy="steps", save_steps=2).train()
    assert first.history.steps == [0, 2, 4, 6]
    resumed = _callback(tmp_path, every_n_steps=2)
    make_trainer(tmp_path, [resumed], max_steps=6, save_strategy="no").train(
        resume_from_checkpoint=str(tmp_path / "checkpoint-2")
    )
    # audits after step 2 belong to the abandoned run and are redone; step 0 stays the reference
    assert resumed.history.steps == [0, 2, 4, 6]
    assert resumed.auditor.reference_stats is not None
    assert torch.equal(resumed.auditor.reference_stats.nll, first.history.results[0].stats.nll)
    assert AuditHistory.load(tmp_path / "mia" / "history.json").steps == [0, 2, 4, 6]
    jsonl = (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in jsonl] == [0, 2, 4, 6]


def test_rejects_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        MIAAuditCallback(canaries(), every_n_steps=0)
    with pytest.raises(ValueError, match="needs a release policy"):
        MIAAuditCallback(canaries(), stop_on_blocked=True)
    with pytest.raises(ValueError, match="canaries"):
        MIAAuditCallback()
    with pytest.raises(ValueError, match="confidence"):
        # the policy asks for 99% intervals; the audit computes 95%: refused before training
        callback = _callback(tmp_path, policy={"max_auc": 0.6, "confidence": 0.99})
        make_trainer(tmp_path, [callback], max_steps=1).train()


def test_unwraps_parallel_and_opacus_wrappers_and_restores_hooks():
    opacus = pytest.importorskip("opacus")
    inner = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    wrapped = opacus.GradSampleModule(inner)
    parallel = torch.nn.DataParallel(wrapped)
    assert unwrap_model(parallel) is inner
    assert wrapped.hooks_enabled
    with opacus_hooks_disabled(parallel):
        assert not wrapped.hooks_enabled
    assert wrapped.hooks_enabled


def test_training_again_with_the_same_callback_starts_a_new_curve(tmp_path):
    callback = _callback(tmp_path, every_n_steps=2)
    make_trainer(tmp_path, [callback], max_steps=2).train()
    first_reference = callback.auditor.reference_stats
    make_trainer(tmp_path, [callback], max_steps=3, seed=1).train()
    assert callback.history.steps == [0, 2, 3]
    assert callback.auditor.reference_stats is not first_reference  # the new run's step 0
    jsonl = (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in jsonl] == [0, 2, 3]
