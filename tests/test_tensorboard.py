"""TensorBoard and JSONL sinks, read back with TensorBoard's own event reader."""

from __future__ import annotations

import json
import math
import re

import pytest
from tensorboard.backend.event_processing import event_accumulator
from trainer_runs import canaries, make_trainer

from mia_guard.callbacks import MIAAuditCallback
from mia_guard.callbacks.sinks import EVENT_FILE_SUFFIX, audit_scalars, custom_scalar_layout, fpr_label


def _load(directory):
    """The single mia_guard event file in ``directory``, fully loaded."""
    files = [p for p in directory.iterdir() if p.name.startswith("events.out") and p.name.endswith(EVENT_FILE_SUFFIX)]
    assert len(files) == 1, files
    keep_all = {"scalars": 0, "images": 0, "tensors": 0, "histograms": 0}
    acc = event_accumulator.EventAccumulator(str(files[0]), size_guidance=keep_all)
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """A 7-step Trainer run audited at 0, 3, 6, 7 with 200 canaries (so TPR@1% FPR is resolvable)."""
    tmp_path = tmp_path_factory.mktemp("tb")
    callback = MIAAuditCallback(
        canaries(200),
        every_n_steps=3,
        output_dir=tmp_path / "mia",
        tensorboard=tmp_path / "logs",
        policy={"max_auc": 0.6},
        progress=False,
    )
    make_trainer(tmp_path, [callback], canary_set=callback.canaries, max_steps=7).train()
    return callback, _load(tmp_path / "logs"), tmp_path


def test_scalars_equal_the_audit_results(tensorboard_run):
    callback, acc, _ = tensorboard_run
    tags = set(acc.Tags()["scalars"])
    n_nonmembers = int((~callback.canaries.is_member).sum())
    assert 100 <= n_nonmembers < 1000  # 1% FPR resolvable, 0.1% not
    for name in ("loss", "min_k_plus_plus", "reference", "lira_online_ref", "seq_lira_refcal", "classifier_logreg"):
        for suffix in ("", "_low", "_high"):
            assert f"mia/{name}/auc{suffix}" in tags
            assert f"mia/{name}/tpr@1%fpr{suffix}" in tags
            assert f"mia/{name}/tpr@10%fpr{suffix}" in tags
        assert f"mia/{name}/tpr@0.1%fpr" not in tags  # unresolvable: left out, not NaN
    for tag in ("mia/loss/member", "mia/loss/nonmember", "mia/best/auc", "mia/best/tpr@1%fpr"):
        assert tag in tags
    checked = 0
    for result in callback.history:
        scalars, unresolved = audit_scalars(result)
        assert "loss/tpr@0.1%fpr" in unresolved
        for tag, value in scalars.items():
            events = [e for e in acc.Scalars(f"mia/{tag}") if e.step == result.step]
            assert len(events) == 1, (tag, result.step)
            assert events[0].value == pytest.approx(value, rel=1e-6, abs=1e-7)
            checked += 1
    assert checked > 4 * 50
    last = callback.history.last
    best = last.best_attack()
    best_auc = [e.value for e in acc.Scalars("mia/best/auc") if e.step == last.step][0]
    assert best_auc == pytest.approx(last.metrics[best].auc.value, rel=1e-6)
    member_loss = [e.value for e in acc.Scalars("mia/loss/member") if e.step == last.step][0]
    assert member_loss == pytest.approx(last.member_nll.value, rel=1e-6)


def test_histograms_roc_gate_text_and_layout(tensorboard_run):
    callback, acc, _ = tensorboard_run
    histograms = set(acc.Tags()["histograms"])
    assert {"mia/loss/scores_member", "mia/loss/scores_nonmember"} <= histograms
    member_hist = acc.Histograms("mia/loss/scores_member")
    assert [h.step for h in member_hist] == callback.history.steps
    assert member_hist[-1].histogram_value.num == int(callback.canaries.is_member.sum())
    images = acc.Images("mia/roc")
    assert [i.step for i in images] == [7] and images[0].width > 100
    gate = acc.Tensors("mia/gate/text_summary")
    assert [g.step for g in gate] == callback.history.steps
    text = gate[-1].tensor_proto.string_val[0].decode()
    assert f"release gate: {callback.last_decision.verdict}" in text

    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    margin = charts["loss: AUC with CI"].margin.series[0]
    assert (margin.value, margin.lower, margin.upper) == ("mia/loss/auc", "mia/loss/auc_low", "mia/loss/auc_high")
    # 200 canaries resolve 1% and 10% FPR, not 0.1%: no chart waits for figures that never come
    assert "loss: TPR@0.1%FPR with CI" not in charts
    assert list(charts["loss: TPR at 1%, 10% FPR (lines bottom to top)"].multiline.tag) == [
        r"mia/loss/tpr@1%fpr$", r"mia/loss/tpr@10%fpr$"]
    written = set(acc.Tags()["scalars"])
    for title, chart in charts.items():
        if chart.HasField("margin"):
            for series in chart.margin.series:
                assert {series.value, series.lower, series.upper} <= written, title
        else:
            for pattern in chart.multiline.tag:
                assert any(re.match(pattern, tag) for tag in written), (title, pattern)


def test_jsonl_has_one_line_per_audit_with_the_same_figures(tensorboard_run):
    callback, _, tmp_path = tensorboard_run
    lines = [json.loads(line) for line in (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == callback.history.steps
    for line, result in zip(lines, callback.history):
        scalars, unresolved = audit_scalars(result)
        assert line["scalars"] == pytest.approx(scalars)
        assert line["unresolved"] == unresolved
        assert line["best_attack"] == result.best_attack()
        assert line["gate"] in ("pass", "blocked", "inconclusive")


def test_default_directory_is_the_trainers_tensorboard_directory(tmp_path, monkeypatch):
    """With report_to="tensorboard", the training loss and the leakage figures share one logdir."""
    logdir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))
    callback = MIAAuditCallback(canaries(), every_n_steps=2, output_dir=tmp_path / "mia", progress=False)
    make_trainer(tmp_path, [callback], max_steps=2, report_to="tensorboard", logging_steps=1).train()
    ours = _load(logdir)
    assert "mia/loss/auc" in ours.Tags()["scalars"]
    trainer_files = [p for p in logdir.iterdir() if not p.name.endswith(EVENT_FILE_SUFFIX)]
    trainer_acc = event_accumulator.EventAccumulator(str(trainer_files[0]))
    trainer_acc.Reload()
    assert "train/loss" in trainer_acc.Tags()["scalars"]


def test_fallback_directory_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = MIAAuditCallback(canaries(), every_n_steps=None, output_dir=tmp_path / "mia", progress=False)
    make_trainer(tmp_path, [callback], max_steps=1).train()
    assert "mia/best/auc" in _load(tmp_path / "runs" / "mia_guard").Tags()["scalars"]


def test_audit_scalars_leave_out_what_cannot_be_resolved(tensorboard_run):
    callback, _, _ = tensorboard_run
    result = callback.history.last
    scalars, unresolved = audit_scalars(result)
    assert all(math.isfinite(v) for v in scalars.values())
    assert "needs >= 1000 non-members" in unresolved["loss/tpr@0.1%fpr"]
    assert fpr_label(0.001) == "0.1%" and fpr_label(0.01) == "1%" and fpr_label(0.1) == "10%"
    charts = custom_scalar_layout(["loss"], [0.001, 0.01, 0.1])["mia_guard leakage"]
    assert charts["loss: TPR at 0.1%, 1%, 10% FPR (lines bottom to top)"] == [
        "Multiline", [r"mia/loss/tpr@0\.1%fpr$", r"mia/loss/tpr@1%fpr$", r"mia/loss/tpr@10%fpr$"]]
    charts = custom_scalar_layout(["loss"], [0.001, 0.01, 0.1], n_nonmembers=150)["mia_guard leakage"]
    assert "loss: TPR@0.1%FPR with CI" not in charts and "loss: TPR@1%FPR with CI" in charts
    charts = custom_scalar_layout(["loss"], [0.001, 0.01], n_nonmembers=150)["mia_guard leakage"]
    assert not any(chart[0] == "Multiline" for chart in charts.values())  # one TPR line: its own chart only


def _scalars_of_directory(directory, tag):
    """``{step: value}`` of ``tag`` as TensorBoard's Python reader shows the whole run directory."""
    acc = event_accumulator.EventAccumulator(str(directory))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_a_rerun_into_the_same_directory_replaces_the_earlier_points(tmp_path):
    logdir = tmp_path / "logs"
    runs = []
    for seed in (0, 1):
        callback = MIAAuditCallback(canaries(seed=seed), every_n_steps=2, output_dir=tmp_path / f"mia{seed}",
                                    tensorboard=logdir, progress=False, attacks=["loss"], fprs=[0.1])
        make_trainer(tmp_path / f"out{seed}", [callback], canary_set=callback.canaries, max_steps=3 + seed,
                     seed=seed).train()
        runs.append(callback)
    shown = _scalars_of_directory(logdir, "mia/loss/auc")
    second = {r.step: r.metrics["loss"].auc.value for r in runs[1].history}
    assert sorted(shown) == runs[1].history.steps == [0, 2, 4]
    assert shown == pytest.approx(second, rel=1e-6)


def test_a_resumed_loop_purges_the_abandoned_audits(tmp_path):
    from plain_loop_runs import train

    from mia_guard.callbacks import AuditLoop
    from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2

    options = dict(every_n_steps=2, output_dir=tmp_path / "mia", logging_dir=tmp_path / "tb",
                   attacks=["loss"], fprs=[0.1])
    first = AuditLoop(canaries(), byte_tokenizer(), **options)
    model = tiny_gpt2(n_layer=1, n_embd=32)
    train(model, first.auditor.canaries, 6, first)  # audits 0, 2, 4, 6; then the run "crashes"
    first.session.close()
    resumed = AuditLoop(canaries(), byte_tokenizer(), **options)
    other = tiny_gpt2(n_layer=1, n_embd=32, seed=5)  # what the checkpoint at step 2 continues as
    resumed.start(other, step=2)
    resumed.audit(other, 4)
    resumed.finish(other, 5)
    shown = _scalars_of_directory(tmp_path / "tb", "mia/loss/auc")
    assert sorted(shown) == resumed.history.steps == [0, 2, 4, 5]  # step 6 of the abandoned run is gone
    assert shown == pytest.approx({r.step: r.metrics["loss"].auc.value for r in resumed.history}, rel=1e-6)
