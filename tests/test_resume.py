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


def test_trainer_rebuilds_the_callback_from_the_checkpoint_with_its_whole_config(tmp_path):
    """The Trainer's own stateful-callback mechanism (``restore_callback_states_from_checkpoint``)
    rebuilds the callback from ``TrainerState.stateful_callbacks``: the restored callback has
    the original config (analyses, folds, seed, explicit tokenizer included) and draws the
    uninterrupted curve, privacy figures and gate verdicts."""
    options = dict(
        attacks=["loss", "min_k", "lira_online"], attack_params={"min_k": {"k": 0.3}}, fprs=[0.05, 0.1],
        confidence=0.9, n_folds=3, seed=7, analyses=["privacy"], analysis_options={"delta": 1e-4}, batch_size=16,
    )

    def callback(out) -> MIAAuditCallback:
        return MIAAuditCallback(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=out / "mia",
                                tensorboard=False, progress=False, policy={"max_epsilon_lower_bound": 50.0, "confidence": 0.9,
                                                                   "min_canaries_per_class": 1},
                                **options)

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    reference = callback(straight)
    make_trainer(straight, [reference], max_steps=6).train()
    first = callback(broken)
    with pytest.raises(SimulatedCrash):
        make_trainer(broken, [first, CrashAt(5)], max_steps=6, save_strategy="steps", save_steps=3,
                     restore_callback_states_from_checkpoint=True).train()
    saved = json.loads((broken / "checkpoint-3" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["MIAAuditCallback"]["args"]["config"] == first.config.to_dict()

    # a new process: the script's callback has default options; the Trainer replaces it with the checkpoint's
    placeholder = MIAAuditCallback(canaries(), progress=False)
    trainer = make_trainer(broken, [placeholder], max_steps=6, restore_callback_states_from_checkpoint=True)
    trainer.train(resume_from_checkpoint=str(broken / "checkpoint-3"))
    (restored,) = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MIAAuditCallback)]
    assert restored is not placeholder
    assert restored.config == reference.config
    assert (restored.config.analyses, restored.config.n_folds, restored.config.seed) == (("privacy",), 3, 7)
    assert restored.tokenizer_identity == first.tokenizer_identity
    assert restored.history.steps == reference.history.steps == [0, 2, 4, 6]
    for got, expected in zip(restored.history, reference.history):
        assert set(got.metrics) == {"loss", "min_k", "lira_online"} and sorted(got.metrics["loss"].tpr_at_fpr) == [0.05, 0.1]
        for name, scores in expected.scores.items():
            np.testing.assert_allclose(got.scores[name], scores, atol=1e-6, rtol=0, err_msg=f"{name}@{got.step}")
        assert got.extras["privacy"]["epsilon_lb_one_run"] == pytest.approx(
            expected.extras["privacy"]["epsilon_lb_one_run"], abs=1e-6)
    assert restored.last_decision.verdict == reference.last_decision.verdict
    assert restored.last_decision.verdict != "inconclusive"  # the privacy rule had its figure


def test_restored_callback_refuses_a_tokenizer_that_encodes_the_canaries_differently(tmp_path):
    first = MIAAuditCallback(canaries(), every_n_steps=2, output_dir=tmp_path / "mia", tensorboard=False,
                             progress=False)
    make_trainer(tmp_path, [first], max_steps=3, save_strategy="steps", save_steps=3).train()
    state = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    restored = MIAAuditCallback(**state["stateful_callbacks"]["MIAAuditCallback"]["args"])
    restored.tokenizer_identity = state["stateful_callbacks"]["MIAAuditCallback"]["attributes"]["tokenizer_identity"]

    class UpperCaseBytes(type(byte_tokenizer())):  # another tokenizer: other ids for the same canaries
        def __call__(self, text, **kwargs):
            return super().__call__(text.upper(), **kwargs)

    trainer = make_trainer(tmp_path, [restored], max_steps=4)
    trainer.processing_class = trainer.callback_handler.processing_class = UpperCaseBytes(extra_ids=0)
    with pytest.raises(ValueError, match="encodes the canaries differently"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


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
