"""Faults during training-time audits: out of memory, NaN statistics, crashes mid-write,
unwritable output directories. Each fault is injected into a real run (a model that
refuses large batches, hooks that corrupt logits, a write that fails halfway)."""

from __future__ import annotations

import errno
import logging
import os

import numpy as np
import pytest
import torch
from plain_loop_runs import train
from trainer_runs import canaries, make_trainer

from mia_guard import AuditHistory, Auditor
from mia_guard.callbacks import AuditLoop, MIAAuditCallback
from mia_guard.canaries.encoding import encode_canaries
from mia_guard.experiments.demo_assets import byte_tokenizer, tiny_gpt2
from mia_guard.report.files import load_report
from mia_guard.scoring.faults import (
    AuditOutOfMemoryError,
    OutputDirectoryError,
    retry_on_oom,
)


class OutOfMemoryAbove(torch.nn.Module):
    """Fault injection: a causal LM that raises an out-of-memory error for audit (eval mode)
    batches of more than ``limit`` rows; training batches pass through."""

    def __init__(self, model: torch.nn.Module, limit: int, error: type[Exception] = torch.OutOfMemoryError) -> None:
        super().__init__()
        self.model, self.limit, self.error = model, limit, error
        self.refused: list[int] = []

    def forward(self, input_ids, attention_mask=None, labels=None):
        if not self.training and input_ids.shape[0] > self.limit:
            self.refused.append(int(input_ids.shape[0]))
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def _loop(tmp_path, **options) -> AuditLoop:
    options.setdefault("every_n_steps", 2)
    return AuditLoop(canaries(), byte_tokenizer(), output_dir=tmp_path / "mia", **options)


# ---------------------------------------------------------------------------- out of memory
@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError], ids=["OutOfMemoryError", "RuntimeError"])
def test_out_of_memory_retries_smaller_batches_and_says_so(tmp_path, error):
    model = OutOfMemoryAbove(tiny_gpt2(n_layer=1, n_embd=32), limit=5, error=error)
    loop = _loop(tmp_path, batch_size=32)
    assert train(model, loop.auditor.canaries, 2, loop) == 2  # training went on
    first, second = loop.history.results
    assert model.refused == [32, 16, 8]  # then batches of 4 fit; later audits start at 4
    assert any("out of memory at batch size 32, 16, 8" in note and "batch size 4" in note for note in first.notes)
    assert not any("out of memory" in note for note in second.notes)
    assert loop.session.batch_size == 4
    expected = Auditor(loop.auditor.canaries, byte_tokenizer()).score(model.model)  # no fault, same weights
    for name in ("nll", "confidence", "entropy"):
        np.testing.assert_allclose(second.stats.field(name), expected.field(name), atol=1e-5, rtol=0)
    saved = AuditHistory.load(tmp_path / "mia" / "history.json")
    assert any("out of memory" in note for note in saved.results[0].notes)  # in the files, not only the log


def test_out_of_memory_at_batch_size_one_skips_the_audit_not_training(tmp_path, caplog):
    model = OutOfMemoryAbove(tiny_gpt2(n_layer=1, n_embd=32), limit=0)
    loop = _loop(tmp_path, batch_size=4)
    with caplog.at_level(logging.ERROR, logger="mia_guard"):
        assert train(model, loop.auditor.canaries, 3, loop) == 3
    assert len(loop.history) == 0
    assert sorted(loop.session.skipped) == [0, 2]
    assert "ran out of memory at batch sizes [4, 2, 1]" in loop.session.skipped[2]
    assert "the audit at step 2 failed and is skipped; training goes on" in caplog.text
    model.limit = 1000  # memory freed: the final audit runs, and the report lists the skipped ones
    loop.finish(model, 3)
    assert loop.history.steps == [3]
    report = load_report(tmp_path / "mia" / "report.json")
    assert sorted(report["run_info"]["skipped_audits"]) == ["0", "2"]
    assert [f["step"] for f in report["failed_audits"]] == [0, 2]


def test_retry_passes_other_errors_through_untouched():
    calls = []

    def fails(batch_size: int):
        calls.append(batch_size)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        retry_on_oom(fails, 8)
    assert calls == [8]  # not retried: only out-of-memory errors are
    with pytest.raises(AuditOutOfMemoryError) as info:
        retry_on_oom(lambda b: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")), 3)
    assert info.value.batch_sizes == [3, 1]


# ---------------------------------------------------------------------------- NaN statistics
def nan_logits_for(model, sequences: list[list[int]]) -> None:
    """Fault injection: in eval mode, the final hidden states (hence the logits) of any batch
    row holding one of ``sequences`` (before right padding) become NaN. Training (train
    mode) is untouched."""
    poisoned = {tuple(seq) for seq in sequences}

    def corrupt(module, args, kwargs, output):
        if module.training:
            return output
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        rows = [i for i, row in enumerate(ids.tolist()) if tuple(np.trim_zeros(row, "b")) in poisoned]
        output.last_hidden_state = output.last_hidden_state.clone()
        output.last_hidden_state[rows] = float("nan")
        return output

    model.transformer.register_forward_hook(corrupt, with_kwargs=True)


def test_nan_statistics_are_marked_and_reported_through_the_callback(tmp_path):
    canary_set = canaries()
    encoded = encode_canaries(canary_set, byte_tokenizer())
    model = tiny_gpt2(n_layer=1, n_embd=32)
    nan_logits_for(model, [encoded.input_ids[3], encoded.input_ids[10]])
    callback = MIAAuditCallback(canary_set, every_n_steps=2, output_dir=tmp_path / "mia", progress=False,
                                tensorboard=False)
    make_trainer(tmp_path, [callback], model=model, max_steps=2).train()
    for result in callback.history:
        assert result.invalid_canaries == [3, 10]
        assert any("2 canaries had NaN/inf token statistics" in note for note in result.notes)
        for scores in result.scores.values():
            assert np.isnan(scores[[3, 10]]).all() and np.isfinite(np.delete(scores, [3, 10])).all()
        assert result.metrics["loss"].n_members + result.metrics["loss"].n_nonmembers == len(canary_set) - 2
    report = load_report(tmp_path / "mia" / "report.json")
    assert report["audits"][-1]["invalid_canaries"] == [3, 10]
    assert "2 canaries had non-finite statistics" in (tmp_path / "mia" / "report.md").read_text()


# ---------------------------------------------------------------------------- crash mid-write
@pytest.fixture
def crash_writing(monkeypatch):
    """Fault injection: the atomic write of a file whose name starts with ``name`` dies halfway
    through its data with OSError ``error`` (default EIO; ENOSPC is a full disk)."""

    def arm(name: str, error: int = errno.EIO) -> None:
        real_fdopen = os.fdopen

        class HalfWrite:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                raise OSError(error, os.strerror(error))

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            target = os.readlink(f"/proc/self/fd/{fd}")
            return HalfWrite(handle) if os.path.basename(target).startswith(f".{name}.") else handle

        monkeypatch.setattr("mia_guard._io.os.fdopen", fdopen)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file a descriptor writes")
    return arm


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["disk full", "I/O error"])
def test_an_audit_that_cannot_be_written_waits_and_training_goes_on(tmp_path, crash_writing, caplog, monkeypatch,
                                                                      error):
    loop = _loop(tmp_path)
    model = tiny_gpt2(n_layer=1, n_embd=32)
    train(model, loop.auditor.canaries, 1, loop)  # the step-0 audit is on disk
    store = next((tmp_path / "mia").glob("history-*"))
    before = sorted((p.name, p.read_bytes()) for p in store.iterdir())
    crash_writing("000001-step2", error)
    with caplog.at_level(logging.ERROR, logger="mia_guard"):
        assert loop.step(model, 2) is False  # the audit ran, its file write died: training goes on
    assert sorted((p.name, p.read_bytes()) for p in store.iterdir()) == before  # nothing written is lost
    assert "saving history.json failed" in caplog.text
    assert any("could not be written" in note and os.strerror(error) in note for note in loop.history.last.notes)
    assert AuditHistory.load(tmp_path / "mia" / "history.json").steps == [0]
    monkeypatch.undo()  # the disk has room again: the next audit writes the one that waited, then itself
    loop.finish(model, 3)
    saved = AuditHistory.load(tmp_path / "mia" / "history.json")
    assert saved.steps == [0, 2, 3]
    assert any("could not be written" in note for note in saved.results[1].notes)


def test_crash_while_writing_the_report_leaves_the_previous_one_intact(tmp_path, crash_writing):
    loop = _loop(tmp_path)
    model = tiny_gpt2(n_layer=1, n_embd=32)
    loop.finish(model, train(model, loop.auditor.canaries, 2, loop))
    before = (tmp_path / "mia" / "report.json").read_bytes()
    again = _loop(tmp_path)
    again.start(model, step=2)
    crash_writing("report.json")
    assert again.finish(model, 3) == {}  # logged, not raised: the trained model must still be saved
    assert (tmp_path / "mia" / "report.json").read_bytes() == before
    assert [a["step"] for a in load_report(tmp_path / "mia" / "report.json")["audits"]] == [0, 2]


# ---------------------------------------------------------------------------- unwritable directories
def test_unwritable_output_directory_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputDirectoryError, match=f"audit output directory {blocker}/mia"):
        AuditLoop(canaries(), byte_tokenizer(), output_dir=blocker / "mia")
    with pytest.raises(OutputDirectoryError, match="TensorBoard logging directory"):
        AuditLoop(canaries(), byte_tokenizer(), output_dir=tmp_path / "mia", logging_dir=blocker / "tb")


def test_full_disk_fails_at_construction_with_what_to_do(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("mia_guard.scoring.faults.os.fsync", no_space)
    with pytest.raises(OutputDirectoryError, match="No space left on device; free disk space") as info:
        AuditLoop(canaries(), byte_tokenizer(), output_dir=tmp_path / "mia")
    assert info.value.errno == errno.ENOSPC
    assert not list((tmp_path / "mia").iterdir())  # the probe file is removed


def test_callback_reports_an_unwritable_directory_before_the_first_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    callback = MIAAuditCallback(canaries(), output_dir=blocker / "mia", progress=False, tensorboard=False)
    trainer = make_trainer(tmp_path, [callback], max_steps=3)
    with pytest.raises(OutputDirectoryError, match="cannot write to its audit output directory"):
        trainer.train()
    assert trainer.state.global_step == 0
