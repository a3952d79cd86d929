"""AuditLoop in plain PyTorch and Accelerate loops (tiny byte GPT-2, CPU), and the loop examples."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from plain_loop_runs import train
from trainer_runs import canaries

from mia_guard import AuditHistory, CanarySet
from mia_guard.callbacks import AuditLoop
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.report.files import load_report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _loop(tmp_path, canary_set=None, **options) -> AuditLoop:
    return AuditLoop(canary_set or canaries(), byte_tokenizer(), output_dir=tmp_path / "mia", **options)


def test_audits_at_start_every_n_steps_and_finish_and_writes_every_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loop = _loop(tmp_path, every_n_steps=2, logging_dir=tmp_path / "tb")
    model = tiny_gpt2(n_layer=1, n_embd=32, dropout=0.1)
    last = train(model, loop.auditor.canaries, 5, loop)
    paths = loop.finish(model, last)
    assert loop.history.steps == [0, 2, 4, 5]
    out = tmp_path / "mia"
    assert AuditHistory.load(out / "history.json").steps == [0, 2, 4, 5]
    assert CanarySet.load(out / "canaries.json").content_hash == loop.auditor.canaries.content_hash
    lines = [json.loads(line) for line in (out / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 2, 4, 5]
    assert [a["step"] for a in load_report(paths["json"])["audits"]] == [0, 2, 4, 5]
    assert {"json", "markdown", "leakage", "roc"} <= set(paths)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.step for e in events.Scalars("mia/loss/auc")] == [0, 2, 4, 5]


def test_step_before_start_is_refused_with_what_to_do(tmp_path):
    loop = _loop(tmp_path, every_n_steps=1)
    with pytest.raises(RuntimeError, match=r"AuditLoop.start\(model\)"):
        loop.step(tiny_gpt2(n_layer=1, n_embd=32), 1)


def test_blocked_verdict_stops_the_loop(tmp_path, trained_lm):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(trained_lm.directory)
    loop = _loop(tmp_path, trained_lm.canaries, every_n_steps=2, audit_at_start=False,
                 policy={"max_auc": 0.6}, stop_on_blocked=True)
    last = train(model, trained_lm.canaries, 10, loop, learning_rate=1e-6)
    assert last == 2 and loop.stopped_early
    assert loop.last_decision.verdict == "blocked"
    loop.finish(model, last)
    assert loop.history.steps == [2]  # the final audit does not repeat step 2
    assert load_report(tmp_path / "mia" / "report.json")["gate"]["verdict"] == "blocked"


def test_rejects_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        _loop(tmp_path, every_n_steps=0)
    with pytest.raises(ValueError, match="needs a release policy"):
        _loop(tmp_path, stop_on_blocked=True)
    with pytest.raises(ValueError, match="canaries"):
        AuditLoop(output_dir=tmp_path)
    with pytest.raises(ValueError, match="confidence"):  # 99% asked, 95% computed: refused before training
        _loop(tmp_path, policy={"max_auc": 0.6, "confidence": 0.99})


def test_plain_loop_example_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["plain_loop.py", "--steps", "4", "--every", "2", "--canaries", "32",
                                      "--out", str(out)])
    runpy.run_path(str(EXAMPLES / "plain_loop.py"), run_name="__main__")
    assert AuditHistory.load(out / "mia" / "history.json").steps == [0, 2, 4]
    assert "report:" in capsys.readouterr().out
    assert list((out / "runs").glob("*.mia_guard"))


def test_accelerate_loop_example_runs(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(EXAMPLES / "accelerate_loop.py"), "--cpu", "--steps", "3", "--every", "2",
               "--canaries", "32", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert AuditHistory.load(out / "mia" / "history.json").steps == [0, 2, 3]
    assert (out / "mia" / "report.md").exists()
