"""One callback (or loop), several named canary sets: each audited on its own, figures under
mia/<set>/..., one report set and one gate decision covering all (any blocked set blocks)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trainer_runs import make_trainer

from mia_guard import AuditHistory, CanarySet
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.callbacks.sinks import EVENT_FILE_SUFFIX
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.gate import ReleasePolicy, evaluate_report
from mia_guard.gate.combined import combine_decisions, evaluate_report_set
from mia_guard.report.files import load_report
from mia_guard.report.report_set import load_report_set

POLICY = {"max_auc": 0.99}


def _sets() -> dict[str, CanarySet]:
    return {
        "credentials": CanarySet.generate(48, "code_credential", seed=0),
        "pins": CanarySet.generate(48, "pin_sentence", seed=1),
    }


@pytest.fixture(scope="module")
def two_set_run(tmp_path_factory):
    from transformers import Trainer, TrainingArguments

    from mia_guard.experiments.demo_assets import CausalLMCollator, stdlib_corpus, tokenize

    tmp_path = tmp_path_factory.mktemp("sets")
    sets = _sets()
    callback = MIAAuditCallback(sets, every_n_steps=3, output_dir=tmp_path / "mia", tensorboard=tmp_path / "tb",
                                policy=POLICY, progress=False, attacks=["loss", "zlib"], fprs=[0.1])
    texts = stdlib_corpus(max_chars=64 * 120)
    for canaries in sets.values():
        texts = canaries.insert_into(texts, repetitions=2)
    tokenizer = byte_tokenizer()
    Trainer(
        model=tiny_gpt2(n_layer=1, n_embd=32),
        args=TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                               report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True),
        train_dataset=tokenize(texts, tokenizer, 128), data_collator=CausalLMCollator(), processing_class=tokenizer,
        callbacks=[callback],
    ).train()
    return callback, tmp_path


def test_each_set_has_its_own_curve_files_and_report(two_set_run):
    callback, tmp_path = two_set_run
    assert set(callback.history) == {"credentials", "pins"}
    for name, history in callback.history.items():
        assert history.steps == [0, 3, 4]
        assert all(result.canary_set == name for result in history)
        saved = AuditHistory.load(tmp_path / "mia" / name / "history.json")
        assert saved.steps == [0, 3, 4] and saved.last.canary_set == name
        assert CanarySet.load(tmp_path / "mia" / name / "canaries.json").content_hash == \
            callback.canaries[name].content_hash
        report = load_report(tmp_path / "mia" / name / "report.json")
        assert report["canaries"]["count"] == 48
        assert report["canaries"]["template"] == callback.canaries[name].template.name
    # the two sets were scored separately: their membership differs and so do their figures
    credentials, pins = (callback.history[n].last for n in ("credentials", "pins"))
    assert credentials.member_nll.value != pins.member_nll.value


def test_figures_are_named_after_their_set_in_tensorboard(two_set_run):
    callback, tmp_path = two_set_run
    files = [p for p in (tmp_path / "tb").iterdir() if p.name.endswith(EVENT_FILE_SUFFIX)]
    assert len(files) == 1  # one writer for every set
    events = EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert not any(re.match(r"mia/(loss|zlib|best)/", t) for t in tags)  # nothing unnamed
    for name, history in callback.history.items():
        shown = {e.step: e.value for e in events.Scalars(f"mia/{name}/loss/auc")}
        assert shown == pytest.approx({r.step: r.metrics["loss"].auc.value for r in history}, rel=1e-6)
        assert f"mia/{name}/loss/member" in tags and f"mia/{name}/best/auc" in tags
        assert f"mia/{name}/roc" in events.Tags()["images"]
        assert f"mia/{name}/loss/scores_member" in events.Tags()["histograms"]
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    assert sorted(c.title for c in layout.category) == ["mia_guard leakage: credentials", "mia_guard leakage: pins"]


def test_one_report_and_one_gate_decision_cover_every_set(two_set_run):
    callback, tmp_path = two_set_run
    index, reports = load_report_set(tmp_path / "mia" / "report.json")
    assert set(index["sets"]) == {"credentials", "pins"}
    per_set = {name: evaluate_report(ReleasePolicy.from_dict(POLICY), r) for name, r in reports.items()}
    combined = evaluate_report_set(ReleasePolicy.from_dict(POLICY), tmp_path / "mia")
    assert combined.verdict == callback.last_decision.verdict == index["gate"]["verdict"]
    assert combined.to_dict()["checks"] == callback.last_decision.to_dict()["checks"]
    assert {c["canary_set"] for c in combined.checks} == {"credentials", "pins"}
    assert all(reason.startswith(("[credentials] ", "[pins] ")) for reason in combined.reasons)
    assert combined.exit_code == max(d.exit_code for d in per_set.values())
    markdown = (tmp_path / "mia" / "report.md").read_text()
    assert "[credentials](credentials/report.md)" in markdown and "[pins](pins/report.md)" in markdown
    # the CLI judges the report set the same way
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("max_auc = 0.99\n")
    done = subprocess.run([sys.executable, "-m", "mia_guard.cli", "gate", str(tmp_path / "mia" / "report.json"),
                           "--policy", str(policy_file)], capture_output=True, text=True, timeout=300)
    assert done.returncode == combined.exit_code, done.stderr
    assert "[credentials]" in done.stdout and "[pins]" in done.stdout


def test_any_blocked_set_blocks(two_set_run, trained_lm):
    """Real decisions: the memorizing fixture model blocks under max_auc = 0.6; the
    barely trained run's set passes under max_auc = 0.999."""
    from mia_guard import Auditor
    from mia_guard.gate import evaluate_result

    _, tmp_path = two_set_run
    passing = evaluate_report(ReleasePolicy(max_auc=0.999, min_canaries_per_class=10), load_report(tmp_path / "mia" / "pins" / "report.json"))
    memorized = Auditor(trained_lm.canaries, trained_lm.tokenizer, attacks=["loss"], fprs=[0.1]).audit(
        trained_lm.model, step=4)
    blocked = evaluate_result(ReleasePolicy(max_auc=0.6), memorized)
    assert (passing.verdict, blocked.verdict) == ("pass", "blocked")
    both = combine_decisions({"credentials": blocked, "pins": passing})
    assert both.verdict == "blocked" and both.exit_code == 1
    assert any(r.startswith("[credentials] blocked") for r in both.reasons)
    assert combine_decisions({"credentials": passing, "pins": passing}).exit_code == 0


def test_checkpoint_state_rebuilds_named_sets(two_set_run):
    callback, _ = two_set_run
    rebuilt = MIAAuditCallback(**callback.state()["args"])
    assert set(rebuilt.canaries) == {"credentials", "pins"}
    for name, canaries in rebuilt.canaries.items():
        assert canaries.content_hash == callback.canaries[name].content_hash
    assert set(callback.state()["attributes"]["tokenizer_identity"]) == {"credentials", "pins"}


def test_loop_audits_named_sets(tmp_path):
    from plain_loop_runs import train

    sets = _sets()
    loop = AuditLoop(sets, byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia", policy=POLICY,
                     attacks=["loss"], fprs=[0.1], extraction=None)
    model = tiny_gpt2(n_layer=1, n_embd=32)
    last = train(model, sets["credentials"], 3, loop)
    paths = loop.finish(model, last)
    assert {name: h.steps for name, h in loop.history.items()} == {"credentials": [0, 2, 3], "pins": [0, 2, 3]}
    assert set(loop.auditors) == {"credentials", "pins"}
    _, reports = load_report_set(paths["json"])
    assert set(reports) == {"credentials", "pins"}
    assert loop.last_decision.verdict in ("pass", "inconclusive", "blocked")


def test_bad_set_names_and_mixing_are_refused():
    with pytest.raises(ValueError, match="canary set name"):
        MIAAuditCallback({"has space": CanarySet.generate(8, seed=0)})
    with pytest.raises(ValueError, match="empty mapping"):
        MIAAuditCallback({})


def test_named_sets_in_a_two_process_run_agree_on_every_rank(tmp_path):
    """Every set's audit is a collective of its own; both ranks record the same curves, the
    final extraction and the same combined verdict, and rank 0 writes the report set."""
    import json

    from test_distributed import torchrun

    torchrun("canary_sets_loop.py", tmp_path)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1]
    assert seen[0]["steps"] == {"credentials": [0, 2, 3], "pins": [0, 2, 3]}
    assert seen[0]["extraction"] == {"credentials": True, "pins": True}
    _, reports = load_report_set(tmp_path / "mia" / "report.json")
    assert {name: r["audits"][-1]["metrics"]["loss"]["auc"]["value"] for name, r in reports.items()} == \
        pytest.approx(seen[0]["auc"])
