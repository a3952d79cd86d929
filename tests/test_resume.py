"""Resuming from a checkpoint: a run interrupted and resumed yields the leakage curve of an
uninterrupted run (history, JSONL, TensorBoard steps, canary split), for the Trainer
callback and for AuditLoop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plain_loop_runs import train
from trainer_runs import canaries, make_trainer
from transformers import TrainerCallback

from mia_guard import AuditHistory, CanarySet
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


class SimulatedCrash(Exception):
    pass


class CrashAt(TrainerCallback):
    """Fault injection: the process dies at the end of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedCrash(f"killed at step {self.step}")
        return control


def _callback(out) -> MIAAuditCallback:
    return MIAAuditCallback(canaries(), every_n_steps=2, output_dir=out / "mia", tensorboard=out / "tb",
                            progress=False)


def tensorboard_curve(directory) -> dict[int, float]:
    """``{step: value}`` of ``mia/loss/auc`` as TensorBoard shows it (the last event at each step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return {e.step: e.value for e in EventAccumulator(str(directory)).Reload().Scalars("mia/loss/auc")}


def test_interrupted_and_resumed_run_has_the_uninterrupted_curve(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    reference = _callback(straight)
    make_trainer(straight, [reference], max_steps=6).train()

    # checkpoints every 3 steps; the process dies at step 5, after the step-4 audit
    first = _callback(broken)
    with pytest.raises(SimulatedCrash):
        make_trainer(broken, [first, CrashAt(5)], max_steps=6, save_strategy="steps", save_steps=3).train()
    assert AuditHistory.load(broken / "mia" / "history.json").steps == [0, 2, 4]
    resumed = _callback(broken)
    make_trainer(broken, [resumed], max_steps=6).train(resume_from_checkpoint=str(broken / "checkpoint-3"))

    assert resumed.history.steps == reference.history.steps == [0, 2, 4, 6]
    saved = AuditHistory.load(broken / "mia" / "history.json")
    for got, expected in zip(saved, reference.history):
        assert got.step == expected.step
        for name, scores in expected.scores.items():
            np.testing.assert_allclose(got.scores[name], scores, atol=1e-6, rtol=0, err_msg=f"{name}@{got.step}")
            assert got.metrics[name].auc.value == pytest.approx(expected.metrics[name].auc.value, abs=1e-6)
    assert np.array_equal(saved.is_member, reference.history.is_member)  # the same canary split
    assert CanarySet.load(broken / "mia" / "canaries.json").content_hash == reference.canaries.content_hash
    lines = [json.loads(line) for line in (broken / "mia" / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2, 4, 6]
    # TensorBoard: the resumed events continue at steps 4 and 6 with the uninterrupted values
    got, expected = tensorboard_curve(broken / "tb"), tensorboard_curve(straight / "tb")
    assert sorted(got) == sorted(expected) == [0, 2, 4, 6]
    assert got == pytest.approx(expected, abs=1e-6)


def test_audit_loop_resumes_the_curve_at_the_checkpoint_step(tmp_path):
    model = tiny_gpt2(n_layer=1, n_embd=32)
    first = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia")
    first.finish(model, train(model, canaries(), 5, first))
    assert first.history.steps == [0, 2, 4, 5]

    resumed = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia")
    resumed.start(model, step=2)  # a checkpoint at step 2: later audits are redone
    assert resumed.history.steps == [0, 2]
    assert resumed.auditor.reference_stats is not None  # step 0 stays the reference
    resumed.step(model, 3)
    resumed.step(model, 4)
    assert resumed.history.steps == [0, 2, 4]
    lines = (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 2, 4]


def test_audit_loop_refuses_to_resume_with_other_canaries(tmp_path):
    model = tiny_gpt2(n_layer=1, n_embd=32)
    AuditLoop(canaries(), byte_tokenizer(), output_dir=tmp_path / "mia").start(model)
    other = AuditLoop(canaries(seed=1), byte_tokenizer(), output_dir=tmp_path / "mia")
    with pytest.raises(ValueError, match="belongs to other canaries"):
        other.start(model, step=2)
