"""Audits never kill training: a failed audit is skipped, recorded with its cause, and the gate fails closed on it."""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest
import torch
from trainer_runs import canaries, make_trainer

from mia_guard import Auditor, CanarySet
from mia_guard.attacks.registry import register
from mia_guard.audit.auditor import AuditFailedError
from mia_guard.audit.result import AuditHistory
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.callbacks.sinks.base import Sink
from mia_guard.cli import main
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.gate import ReleasePolicy, evaluate_report
from mia_guard.report.files import load_report

torch.set_num_threads(1)

RELEASE_IF_UNSURE = 'on_inconclusive = "pass"\nmax_auc = 0.99\nmin_canaries_per_class = 1\nmax_invalid_share = 0.9\n'


@register("test_broken_attack", overwrite=True, description="raises, as a buggy plug-in would")
def _broken_attack(ctx):
    raise RuntimeError("plug-in bug: index out of range")


def _poison_logits_after(model, step_holder: dict, from_step: int) -> None:
    """NaN logits in eval mode (the audit's forward pass) once training reached ``from_step``;
    training's own forward passes (train mode) are untouched."""

    def hook(module, inputs, output):
        if not module.training and step_holder["step"] >= from_step:
            return output * float("nan")
        return output

    model.lm_head.register_forward_hook(hook)


def test_nan_logits_at_the_final_audit_skip_it_train_on_and_fail_the_gate_closed(tmp_path):
    from transformers import TrainerCallback

    step = {"step": 0}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step["step"] = state.global_step

    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    _poison_logits_after(model, step, from_step=2)
    audit = MIAAuditCallback(canaries(), every_n_steps=2, attacks=("loss", "zlib"), output_dir=tmp_path / "mia",
                             tensorboard=False, policy={"max_auc": 0.99, "on_inconclusive": "pass"}, progress=False)
    trainer = make_trainer(tmp_path / "run", [Clock(), audit], model=model, max_steps=4)
    trainer.train()
    assert trainer.state.global_step == 4  # training went on
    history = AuditHistory.load(tmp_path / "mia" / "history.json")
    assert history.steps == [0]
    assert [f["step"] for f in history.failures] == [2, 4]
    assert "non-finite" in history.failures[0]["reason"] and "logits are not finite" in history.failures[0]["reason"]
    report = load_report(tmp_path / "mia" / "report.json")
    assert report["failed_audits"] == history.failures and report["final"]["step"] == 0
    assert report["gate"]["verdict"] == "inconclusive" and not report["gate"]["released"]
    (tmp_path / "policy.toml").write_text(RELEASE_IF_UNSURE)
    assert main(["gate", str(tmp_path / "mia" / "report.json"), "--policy", str(tmp_path / "policy.toml")]) == 1


def test_auditor_names_non_finite_statistics():
    tokenizer, canary_set = byte_tokenizer(), CanarySet.generate(16, "code_credential", seed=0)
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0).eval()
    auditor = Auditor(canary_set, tokenizer, attacks=("loss",), reference="none")
    stats = auditor.score(model)
    stats.nll[:] = float("nan")
    with pytest.raises(AuditFailedError, match=r"no canary has finite token statistics \(16 of 16.*logits are not finite"):
        auditor.evaluate(stats, 0)
    stats = auditor.score(model)
    stats.nll[torch.as_tensor(canary_set.is_member)] = float("nan")
    with pytest.raises(AuditFailedError, match="no member canary has finite token statistics"):
        auditor.evaluate(stats, 0)


def test_broken_attack_is_recorded_and_fails_the_gate_closed(tmp_path):
    tokenizer, canary_set = byte_tokenizer(), CanarySet.generate(64, "code_credential", seed=0)
    loop = AuditLoop(canary_set, tokenizer, every_n_steps=None, attacks=("loss", "test_broken_attack"),
                     output_dir=tmp_path)
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    result = loop.audit(model, 0)
    assert result.failed_attacks == {"test_broken_attack": "RuntimeError: plug-in bug: index out of range"}
    assert "loss" in result.metrics
    loop.finish(model, 0)
    report = load_report(tmp_path / "report.json")
    decision = evaluate_report(ReleasePolicy(max_auc=0.99, on_inconclusive="pass", min_canaries_per_class=1), report)
    assert decision.exit_code == 1 and decision.checks[0]["fail_closed"]
    assert "'test_broken_attack' was not measured: the attack failed (RuntimeError" in decision.reasons[0]


def test_scoring_errors_skip_the_audit_with_their_cause(tmp_path, caplog):
    model = tiny_gpt2(n_layer=1, n_embd=32, seed=0)
    bad = CanarySet.from_token_ids([[1, 2, 3, 4], [5, 6, 700, 8], [9, 10, 11, 12], [13, 14, 15, 16]], seed=1)
    loop = AuditLoop(bad, every_n_steps=1, attacks=("loss",), output_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="mia_guard"):
        assert loop.start(model, 0) is False  # no stop requested: training goes on
    assert loop.history.steps == []
    assert "canary 1 has token id 700" in loop.history.failures[0]["reason"]
    assert "failed and is skipped; training goes on" in caplog.text
    assert loop.finish(model, 0) == {}  # nothing to report; says so in the log


class _FullDiskSink(Sink):
    def write(self, result, decision):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_does_not_stop_training(tmp_path, monkeypatch, caplog):
    tokenizer, canary_set = byte_tokenizer(), CanarySet.generate(32, "code_credential", seed=0)
    loop = AuditLoop(canary_set, tokenizer, every_n_steps=1, attacks=("loss",), output_dir=tmp_path)
    loop.session.sinks.append(_FullDiskSink())

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mia_guard.audit.storage.atomic_write_bytes", full_disk)  # every history file
    with caplog.at_level(logging.ERROR, logger="mia_guard"):
        result = loop.audit(tiny_gpt2(n_layer=1, n_embd=32, seed=0), 0)
    assert result is not None and any("could not be written" in note for note in result.notes)
    assert "_FullDiskSink.write failed (OSError" in caplog.text and "No space left" in caplog.text


@pytest.mark.parametrize("every", [True, False, 0, -3, 2.0, "10"])
def test_every_n_steps_must_be_a_positive_integer(every):
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
        MIAAuditCallback(canaries(8), every_n_steps=every)
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
        AuditLoop(canaries(8), byte_tokenizer(), every_n_steps=every, output_dir="unused")


def test_history_failures_round_trip_and_follow_truncation(tmp_path):
    history = AuditHistory("hash", np.array([True, False]), (0.1,), 0.95)
    history.record_failure(100, "scoring failed: disk full")
    history.record_failure(300, "non-finite logits")
    history.save(tmp_path / "h.json")
    loaded = AuditHistory.load(tmp_path / "h.json")
    assert loaded.failures == history.failures
    loaded.truncate_after(200)
    assert [f["step"] for f in loaded.failures] == [100]
