"""The embedded demo: a shortened run end to end, the CLI, and (slow) the default run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mia_guard.cli import build_parser, main
from mia_guard.experiments.demo import DemoConfig, run_demo
from mia_guard.gate import example_policy_path
from mia_guard.report.files import load_report

torch.set_num_threads(1)


def test_short_demo_writes_every_output(tmp_path):
    lines: list[str] = []
    config = DemoConfig(
        steps=20, every=10, canaries=32, corpus_chunks=100, n_layer=1, n_embd=32,
        device="cpu", output_dir=tmp_path / "demo", progress=False,
    )
    outcome = run_demo(config, echo=lines.append)
    assert outcome.history.steps == [0, 10, 20]
    assert outcome.decision.verdict in ("pass", "blocked", "inconclusive")
    text = "\n".join(lines)
    assert "step 20: member loss" in text and "seq_lira" in text  # a leakage table per audit
    assert f"mia-guard gate: {outcome.decision.verdict.upper()}" in text
    # the printed exit code is the gate command's, on this very report, and the demo says its own is 0
    assert f"exits {outcome.decision.exit_code}.)" in text and "The demo itself ends with exit 0" in text
    policy = str(example_policy_path())
    assert main(["gate", str(tmp_path / "demo" / "mia" / "report.json"), "--policy", policy]) == outcome.decision.exit_code

    mia = tmp_path / "demo" / "mia"
    report = load_report(mia / "report.json")
    assert [a["step"] for a in report["audits"]] == [0, 10, 20]
    assert report["gate"]["verdict"] == outcome.decision.verdict
    assert len((mia / "audits.jsonl").read_text().splitlines()) == 3
    events = sorted(p.name for p in outcome.tensorboard_dir.iterdir())
    assert len(events) == 2 and events[1].endswith(".mia_guard")  # the Trainer's loss and the leakage figures

    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(outcome.model_dir)
    assert model.config.n_layer == 1 and model.config.n_embd == 32


def test_cli_demo_runs_with_small_flags(tmp_path, capsys):
    code = main([
        "demo", "--steps", "4", "--every", "2", "--canaries", "16", "--repetitions", "2",
        "--n-layer", "1", "--n-embd", "16", "--device", "cpu", "--output-dir", str(tmp_path), "--no-progress",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "step 4: member loss" in out and "tensorboard --logdir" in out
    assert json.loads((tmp_path / "mia" / "report.json").read_text())["audits"][-1]["step"] == 4


def test_cli_defaults_match_the_library_defaults():
    args = build_parser().parse_args(["demo"])
    defaults = DemoConfig()
    for field in ("steps", "every", "canaries", "repetitions", "n_layer", "n_embd", "device", "output_dir", "seed", "threads"):
        assert getattr(args, field) == getattr(defaults, field), field
    assert args.no_progress is (not defaults.progress)


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    assert main(["demo", "--n-embd", "33", "--output-dir", str(tmp_path)]) == 2
    assert "n_embd" in capsys.readouterr().err
    with pytest.raises(ValueError, match="canaries"):
        DemoConfig(canaries=4)


@pytest.mark.slow
def test_default_demo_shows_leakage_rising_within_five_minutes(tmp_path):
    config = dataclasses.replace(DemoConfig(), output_dir=tmp_path, progress=False, device="cpu")
    outcome = run_demo(config, echo=lambda line: None)
    assert outcome.seconds["total"] < 300
    first, last = outcome.history.results[0], outcome.history.results[-1]
    assert last.step == config.steps and len(outcome.history) == config.steps // config.every + 1
    auc_first, auc_last = first.metrics["loss"].auc, last.metrics["loss"].auc
    assert auc_first.high < auc_last.low and auc_last.value > 0.9
    assert outcome.decision.verdict == "blocked"
