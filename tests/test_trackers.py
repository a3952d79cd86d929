"""Leakage figures reach the trackers a Trainer or an Accelerate loop reports to, read back
through each tracker's own client or files: MLflow (local file store, MlflowClient),
Weights & Biases (offline run file), TensorBoard (event files), Accelerate's trackers."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trainer_runs import canaries, make_trainer

from mia_guard import Auditor
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.callbacks.sinks import audit_scalars
from mia_guard.callbacks.sinks.scalars import portable_tag
from mia_guard.callbacks.sinks.trackers import TrainerIntegrationSink, tracker_values
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow file store as the tracking URI, with no run left active afterwards.
    (MLflow 3 keeps the file store in maintenance mode behind MLFLOW_ALLOW_FILE_STORE.)"""
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _only_run(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = client.search_experiments()
    runs = [r for e in experiments for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, runs
    return client, runs[0]


def _audit_callback(tmp_path, **options) -> MIAAuditCallback:
    return MIAAuditCallback(
        canaries(), every_n_steps=3, output_dir=tmp_path / "mia", policy={"max_auc": 0.99}, progress=False,
        attacks=["loss", "zlib"], fprs=[0.1], **options,
    )


def test_portable_names_are_accepted_by_mlflow_and_keep_everything_else():
    from mlflow.utils.validation import validate_param_and_metric_name

    assert portable_tag("mia/min_k/tpr@0.1%fpr_low") == "mia/min_k/tpr_at_0.1pct_fpr_low"
    assert portable_tag("mia/best/auc") == "mia/best/auc"
    for tag in ("mia/loss/tpr@1%fpr", "mia/loss/tpr@10%fpr_high", "mia/privacy/epsilon_lb_one_run"):
        assert validate_param_and_metric_name(portable_tag(tag))


def test_trainer_reporting_to_mlflow_gets_the_leakage_curve_in_its_run(tmp_path, mlflow_store):
    callback = _audit_callback(tmp_path)
    make_trainer(tmp_path, [callback], canary_set=callback.canaries, report_to=["mlflow"], logging_steps=2).train()
    assert callback.tracker_names == ["mlflow"]
    client, run = _only_run(mlflow_store)
    # the Trainer's own loss and the audit figures are in the same run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    assert callback.history.steps == [0, 3, 6, 7]
    for result in callback.history:
        scalars, _ = audit_scalars(result)
        assert len(scalars) > 10
        for tag, value in scalars.items():
            points = [m for m in client.get_metric_history(run.info.run_id, portable_tag(f"mia/{tag}"))
                      if m.step == result.step]
            assert len(points) == 1, (tag, result.step)
            assert points[0].value == pytest.approx(value, rel=1e-9)
    auc = client.get_metric_history(run.info.run_id, "mia/loss/auc")
    assert [m.step for m in auc] == [0, 3, 6, 7]
    assert client.get_run(run.info.run_id).data.tags["mia/gate"] == callback.last_decision.verdict


def test_trackers_false_or_a_list_leaves_the_others_out(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    callback = _audit_callback(tmp_path, trackers=["wandb"])  # not reported to: nothing to do
    make_trainer(tmp_path, [callback], canary_set=callback.canaries, report_to=["mlflow"], logging_steps=2).train()
    assert callback.tracker_names == []
    client, run = _only_run(mlflow_store)
    assert "mia/loss/auc" not in client.get_run(run.info.run_id).data.metrics
    assert isinstance(client, MlflowClient)
    with pytest.raises(TypeError, match="trackers must be"):
        MIAAuditCallback(canaries(), trackers="mlflow")


def test_trainer_reporting_to_wandb_offline_gets_the_curve_on_the_loss_axis(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    import wandb_offline

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = _audit_callback(tmp_path)
    try:
        make_trainer(tmp_path, [callback], canary_set=callback.canaries, report_to=["wandb"], logging_steps=2).train()
    finally:
        wandb.finish()
    assert callback.tracker_names == ["wandb"]
    run_file = wandb_offline.run_file(tmp_path)
    rows = wandb_offline.history(run_file)
    audits = [r for r in rows if "mia/loss/auc" in r]
    assert [r["train/global_step"] for r in audits] == [0, 3, 6, 7]
    assert [r["train/global_step"] for r in rows if "train/loss" in r] == [2, 4, 6]
    for row, result in zip(audits, callback.history):
        assert row == pytest.approx({**tracker_values(result), **{k: row[k] for k in row if not k.startswith("mia/")}})
        assert "mia/loss/tpr@10%fpr" in row  # W&B takes the names as they are
    assert wandb_offline.summary(run_file)["mia/gate"] == callback.last_decision.verdict


def test_trainer_tensorboard_leakage_sits_in_the_trainers_run_beside_its_loss(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = _audit_callback(tmp_path)
    make_trainer(tmp_path, [callback], canary_set=callback.canaries, report_to=["tensorboard"], logging_steps=2).train()
    runs = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    assert len(runs) == 1 and runs[0].name != "mia_guard", runs  # the Trainer's runs/<date>_<host>
    files = sorted(p.name for p in runs[0].iterdir())
    assert len(files) == 2 and sum(name.endswith(".mia_guard") for name in files) == 1, files
    loss, leakage = {}, {}
    for name in files:  # each file read whole (TensorBoard's data server reads every file of a run)
        events = EventAccumulator(str(runs[0] / name)).Reload()
        tags = events.Tags()["scalars"]
        if "train/loss" in tags:
            loss = {e.step: e.value for e in events.Scalars("train/loss")}
        if "mia/loss/auc" in tags:
            leakage = {e.step: e.value for e in events.Scalars("mia/loss/auc")}
    assert sorted(loss) == [2, 4, 6]
    assert leakage == pytest.approx({r.step: r.metrics["loss"].auc.value for r in callback.history})
    assert callback.tracker_names == ["tensorboard"]


def test_other_integrations_get_the_figures_through_their_own_on_log(tmp_path, trained_lm):
    """The generic path, with a real integration (transformers' TensorBoardCallback): it
    names the figures as it names the Trainer's logs (``train/...``), at the audit's step."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    integration = TensorBoardCallback()
    integration.logging_dir = str(tmp_path / "tb")
    integration.on_train_begin(args, state, control)
    sink = TrainerIntegrationSink(integration, args, state, control)
    auditor = Auditor(trained_lm.canaries, trained_lm.tokenizer, attacks=["loss"], fprs=[0.1])
    result = auditor.audit(trained_lm.model, step=40)
    sink.write(result)
    integration.on_train_end(args, state, control)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    (point,) = events.Scalars("train/mia/loss/auc")
    assert point.step == 40 and point.value == pytest.approx(result.metrics["loss"].auc.value, rel=1e-6)
    assert state.global_step == 0  # the Trainer's state is not touched


def test_accelerate_loop_sends_figures_to_every_tracker(tmp_path, mlflow_store):
    from accelerate import Accelerator
    from mlflow.tracking import MlflowClient

    from plain_loop_runs import train

    accelerator = Accelerator(cpu=True, log_with=["tensorboard", "mlflow"], project_dir=str(tmp_path / "trackers"))
    accelerator.init_trackers("audit")
    loop = AuditLoop(canaries(), byte_tokenizer(), every_n_steps=2, output_dir=tmp_path / "mia",
                     accelerator=accelerator, attacks=["loss"], fprs=[0.1])
    model = tiny_gpt2(n_layer=1, n_embd=32)
    last = train(model, loop.auditor.canaries, 4, loop)
    accelerator.log({"train_loss": 1.0}, step=last)
    loop.finish(model, last)
    accelerator.end_training()
    steps = [0, 2, 4]
    assert loop.history.steps == steps
    # TensorBoard: mia_guard's sink writes into the tracker's directory, the loop's scalars beside
    events = EventAccumulator(str(tmp_path / "trackers" / "audit")).Reload()
    assert "train_loss" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("mia/loss/auc")] == steps  # once per audit, not twice
    # MLflow: through the tracker, with MLflow-safe names
    client = MlflowClient(mlflow_store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "audit"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "mia/loss/tpr_at_10pct_fpr")
    assert [m.step for m in history] == steps
    assert [m.value for m in history] == pytest.approx(
        [r.metrics["loss"].tpr_at_fpr[0.1].value for r in loop.history], rel=1e-9)
