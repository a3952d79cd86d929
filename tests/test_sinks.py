"""The Sink interface: AuditSession calls every sink the same way (start, write per audit with
its gate decision, finish, close), on the main process only; the built-in TensorBoard and
JSONL sinks are sinks like any other."""

from __future__ import annotations

import json

import pytest
from trainer_runs import canaries

from mia_guard import Auditor
from mia_guard.callbacks import AuditSession
from mia_guard.callbacks.sinks import JsonlSink, Sink, TensorBoardSink
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2


class RecordingSink(Sink):
    """A third-party sink: keeps what it was given, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, history, decisions, step=0):
        self.calls.append(("start", history.steps, {s: d.verdict for s, d in decisions.items()}))

    def write(self, result, decision):
        self.calls.append(("write", result.step, decision.verdict if decision is not None else None))

    def finish(self, history):
        self.calls.append(("finish", history.steps))

    def close(self):
        self.calls.append(("close",))


def _session(tmp_path, sinks, **options) -> AuditSession:
    auditor = Auditor(canaries(), byte_tokenizer(), attacks=["loss"], fprs=[0.1])
    return AuditSession(auditor, tmp_path / "mia", tensorboard_dir=tmp_path / "tb", sinks=sinks,
                        policy=_policy(), **options)


def _policy():
    from mia_guard.gate import ReleasePolicy

    return ReleasePolicy(max_auc=0.99, min_canaries_per_class=1)  # 32 canaries: below the default evidence


def test_every_sink_gets_each_audit_with_its_decision_then_finish_and_close(tmp_path):
    recorder = RecordingSink()
    session = _session(tmp_path, [recorder])
    assert [type(s) for s in session.sinks] == [TensorBoardSink, JsonlSink, RecordingSink]
    model = tiny_gpt2(n_layer=1, n_embd=32)
    session.start_fresh()
    for step in (0, 3):
        session.audit(model, step)
    session.finish()
    assert recorder.calls == [
        ("start", [], {}), ("write", 0, "pass"), ("write", 3, "pass"), ("finish", [0, 3]), ("close",),
    ]
    # the built-in sinks saw the same audits and verdicts
    lines = [json.loads(line) for line in (tmp_path / "mia" / "audits.jsonl").read_text().splitlines()]
    assert [(line["step"], line["gate"]) for line in lines] == [(0, "pass"), (3, "pass")]

    # resuming at step 0 keeps the first audit: every sink restarts from it
    again = RecordingSink()
    resumed = _session(tmp_path, [again])
    resumed.resume(0)
    assert again.calls == [("start", [0], {0: "pass"})]
    assert len((tmp_path / "mia" / "audits.jsonl").read_text().splitlines()) == 1


def test_sinks_are_not_called_on_other_processes_and_must_be_sinks(tmp_path):
    recorder = RecordingSink()
    session = _session(tmp_path, [recorder], is_main=False)
    assert session.sinks == []
    session.start_fresh()
    session.audit(tiny_gpt2(n_layer=1, n_embd=32), 0)
    session.finish()
    assert recorder.calls == [] and not (tmp_path / "mia" / "audits.jsonl").exists()
    with pytest.raises(TypeError, match="must implement mia_guard.callbacks.sinks.Sink"):
        _session(tmp_path, [object()])
