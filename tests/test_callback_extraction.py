"""Secret extraction inside the callback and the loop: at its own cadence (final audit by
default), figures in the audit, the report and TensorBoard, judged by the gate's
``max_extraction_rate``."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trainer_runs import canaries, make_trainer

from mia_guard import AuditHistory
from mia_guard.analyses.extraction import extract_secrets
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.callbacks.extraction_schedule import ExtractionSchedule
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.gate import ReleasePolicy, evaluate_report
from mia_guard.report.files import load_report


@pytest.fixture(scope="module")
def memorized_run(tmp_path_factory, trained_lm):
    """The memorizing tiny GPT-2 trained one more (near-zero) step by a Trainer with the callback."""
    from transformers import GPT2LMHeadModel

    tmp_path = tmp_path_factory.mktemp("extraction")
    callback = MIAAuditCallback(
        trained_lm.canaries, every_n_steps=1, output_dir=tmp_path / "mia", tensorboard=tmp_path / "tb",
        policy={"max_extraction_rate": 0.5}, progress=False, attacks=["loss"], fprs=[0.1],
    )
    model = GPT2LMHeadModel.from_pretrained(trained_lm.directory)
    make_trainer(tmp_path, [callback], model=model, canary_set=trained_lm.canaries, max_steps=2,
                 learning_rate=1e-12, dropout=0.0).train()
    return callback, model, tmp_path


def test_final_audit_extracts_by_default_and_others_do_not(memorized_run, trained_lm):
    callback, model, tmp_path = memorized_run
    assert callback.history.steps == [0, 1, 2]
    first, middle, last = callback.history
    assert "extraction" not in first.extras and "extraction" not in middle.extras
    privacy = last.extras["privacy"]
    expected = extract_secrets(model.eval(), trained_lm.canaries, trained_lm.tokenizer)  # a second computation
    assert privacy["extraction_rate"] == pytest.approx(expected.exact_rate(True).value)
    assert privacy["extraction_rate_high"] == pytest.approx(expected.exact_rate(True).high)
    assert privacy["extraction_char_rate"] == pytest.approx(expected.char_rate(True).value)
    record = last.extras["extraction"]
    assert record["is_member"] == [bool(m) for m in trained_lm.canaries.is_member]
    assert len(record["generated"]) == len(trained_lm.canaries)
    # saved with the audit, in the report and in TensorBoard
    saved = AuditHistory.load(tmp_path / "mia" / "history.json").last
    assert saved.extras["privacy"]["extraction_rate"] == pytest.approx(privacy["extraction_rate"])
    report = load_report(tmp_path / "mia" / "report.json")
    assert report["audits"][-1]["extras"]["privacy"]["extraction_rate"] == pytest.approx(privacy["extraction_rate"])
    assert "inserted secrets extracted by greedy decoding" in (tmp_path / "mia" / "report.md").read_text()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("mia/privacy/extraction_rate")] == [
        (2, pytest.approx(privacy["extraction_rate"]))]


def test_the_gate_judges_the_extraction_figure(memorized_run):
    callback, _, tmp_path = memorized_run
    privacy = callback.history.last.extras["privacy"]
    (check,) = [c for c in callback.last_decision.checks if c["key"] == "max_extraction_rate"]
    assert check["source"] == "extraction_rate"
    assert (check["value"], check["low"], check["high"]) == pytest.approx(
        (privacy["extraction_rate"], privacy["extraction_rate_low"], privacy["extraction_rate_high"]))
    assert check["verdict"] == ("pass" if privacy["extraction_rate_high"] <= 0.5 else "inconclusive")
    # the same judgement from report.json, and a stricter limit inside the interval is inconclusive
    report = load_report(tmp_path / "mia" / "report.json")
    assert evaluate_report(ReleasePolicy(max_extraction_rate=0.5), report).verdict == callback.last_decision.verdict
    strict = evaluate_report(ReleasePolicy(max_extraction_rate=privacy["extraction_rate_high"] / 2), report)
    assert strict.verdict in ("inconclusive", "blocked")
    assert any("extraction rate" in reason for reason in strict.reasons)


def test_without_extraction_the_rule_has_no_producer_and_says_so(tmp_path):
    callback = MIAAuditCallback(canaries(), every_n_steps=None, output_dir=tmp_path / "mia", tensorboard=False,
                                policy={"max_extraction_rate": 0.5}, extraction=None, progress=False,
                                attacks=["loss"], fprs=[0.1])
    make_trainer(tmp_path, [callback], max_steps=1).train()
    assert "extraction" not in callback.history.last.extras
    (check,) = [c for c in callback.last_decision.checks if c["key"] == "max_extraction_rate"]
    assert check["value"] is None and "extraction" in check["reason"]


def test_loop_extracts_at_finish_even_when_the_last_step_was_just_audited(tmp_path):
    from plain_loop_runs import train

    loop = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia",
                     extraction=2, attacks=["loss"], fprs=[0.1], policy={"max_extraction_rate": 0.9})
    model = tiny_gpt2(n_layer=1, n_embd=32)
    last = train(model, loop.auditor.canaries, 4, loop)
    assert "extraction" in loop.history.last.extras  # periodic extraction at step 4 (every 2)
    loop2 = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia2",
                      logging_dir=tmp_path / "tb2", attacks=["loss"], fprs=[0.1],
                      policy={"max_extraction_rate": 0.9})
    last = train(tiny_gpt2(n_layer=1, n_embd=32), loop2.auditor.canaries, 4, loop2)
    assert "extraction" not in loop2.history.last.extras  # step 4 audited by step(), not known to be last
    loop2.finish(model, last)
    assert loop2.history.steps == [0, 2, 4]
    assert "extraction_rate" in loop2.history.last.extras["privacy"]
    assert AuditHistory.load(tmp_path / "mia2" / "history.json").last.extras["extraction"]
    assert any(c["key"] == "max_extraction_rate" and c["value"] is not None for c in loop2.last_decision.checks)
    lines = [json.loads(line) for line in (tmp_path / "mia2" / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2, 4]  # the step-4 line was completed, not repeated
    assert "privacy/extraction_rate" in lines[-1]["scalars"] and "loss/auc" in lines[-1]["scalars"]
    events = EventAccumulator(str(tmp_path / "tb2")).Reload()
    assert [e.step for e in events.Scalars("mia/loss/auc")] == [0, 2, 4]  # no point twice
    assert [e.step for e in events.Scalars("mia/privacy/extraction_rate")] == [4]


def test_extraction_options_are_checked():
    assert ExtractionSchedule.from_option("final") == ExtractionSchedule()
    assert ExtractionSchedule.from_option(100, {"hint_tokens": 2}).every_n_steps == 100
    assert ExtractionSchedule.from_option(None) is None
    schedule = ExtractionSchedule.from_option(ExtractionSchedule(every_n_steps=5).to_dict())
    assert schedule.due(10, final=False) and not schedule.due(7, final=False) and schedule.due(7, final=True)
    with pytest.raises(ValueError, match="extraction must be"):
        MIAAuditCallback(canaries(), extraction="sometimes")
    with pytest.raises(TypeError, match="unknown extraction options"):
        MIAAuditCallback(canaries(), extraction_options={"hints": 2})
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
        ExtractionSchedule(every_n_steps=0)
