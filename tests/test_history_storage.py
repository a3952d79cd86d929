"""The append-only history store: round trip, lazy statistics, constant cost per audit, and
every kind of damage reported with the file and audit step instead of being used."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from audit_histories import audited

from mia_guard import AuditHistory
from mia_guard._io import CorruptFileError, atomic_write_json
from mia_guard.audit.storage import INDEX_FILE, HistoryCorruptError, HistoryWriter


@pytest.fixture(scope="module")
def auditor():
    return audited({0: 0.0, 10: 0.5, 20: 1.0}, n=120)


def empty_store(auditor, tmp_path):
    h = auditor.history
    return AuditHistory(h.canary_hash, h.is_member, h.fprs, h.confidence).store(tmp_path / "history.json")


def saved(auditor, tmp_path):
    path = auditor.history.save(tmp_path / "history.json")
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    return path, folder


def test_round_trip_keeps_figures_and_loads_statistics_on_first_use(auditor, tmp_path):
    path, folder = saved(auditor, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "000000-step0.json", "000000-step0.stats.json", "000001-step10.json", "000001-step10.stats.json",
        "000002-step20.json", "000002-step20.stats.json", INDEX_FILE,
    ]
    assert not [p for p in tmp_path.rglob(".*")]  # no temp files left
    loaded = AuditHistory.load(path)
    assert loaded.steps == [0, 10, 20] and loaded.canary_hash == auditor.history.canary_hash
    assert np.array_equal(loaded.is_member, auditor.history.is_member)
    for got, original in zip(loaded, auditor.history):
        assert got.metrics["loss"].auc == original.metrics["loss"].auc
        assert np.array_equal(got.scores["min_k"], original.scores["min_k"], equal_nan=True)
    # statistics are read when used: with the file gone, the figures still load
    (folder / "000001-step10.stats.json").unlink()
    lazy = AuditHistory.load(path)
    assert torch.equal(lazy.results[0].stats.nll, auditor.history.results[0].stats.nll)
    with pytest.raises(HistoryCorruptError, match=r"token statistics of the audit at step 10 .* are missing"):
        lazy.results[1].stats


def test_what_an_audit_writes_does_not_grow_with_the_history(auditor, tmp_path):
    writer = empty_store(auditor, tmp_path)
    result = auditor.history.last
    receipts = [writer.append(_at_step(result, step)) for step in range(40)]
    sizes = [r.bytes for r in receipts]
    assert max(sizes) - min(sizes) < 16  # only the step number's digits differ
    assert AuditHistory.load(tmp_path / "history.json").steps == list(range(40))


def test_edited_or_truncated_audit_files_are_refused_with_file_and_step(auditor, tmp_path):
    path, folder = saved(auditor, tmp_path)
    record = folder / "000001-step10.json"
    data = record.read_bytes()
    record.write_bytes(data.replace(b'"step": 10', b'"step": 11'))
    with pytest.raises(HistoryCorruptError, match=r"figures of the audit at step 10 .*000001-step10.json.* edited"):
        AuditHistory.load(path)
    record.write_bytes(data[: len(data) // 2])
    with pytest.raises(HistoryCorruptError, match="truncated"):
        AuditHistory.load(path)
    record.write_bytes(data)
    stats = folder / "000002-step20.stats.json"
    blob = bytearray(stats.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit inside the token statistics
    stats.write_bytes(bytes(blob))
    loaded = AuditHistory.load(path)  # the figures are intact
    with pytest.raises(HistoryCorruptError, match=r"token statistics of the audit at step 20"):
        loaded.results[2].stats


def test_missing_audit_file_and_missing_folder_are_named(auditor, tmp_path):
    path, folder = saved(auditor, tmp_path)
    (folder / "000001-step10.json").unlink()
    with pytest.raises(HistoryCorruptError, match=r"audit at step 10 .* missing.* resume training from a checkpoint before step 10"):
        AuditHistory.load(path)
    os.rename(folder, tmp_path / "elsewhere")
    with pytest.raises(HistoryCorruptError, match="which is missing; the folder was moved or deleted"):
        AuditHistory.load(path)


def test_edited_manifest_or_index_is_refused(auditor, tmp_path):
    path, folder = saved(auditor, tmp_path)
    text = path.read_text()
    path.write_text(text.replace('"confidence": 0.95', '"confidence": 0.99'))
    with pytest.raises(CorruptFileError, match=r"audit history .*history.json fails its checksum"):
        AuditHistory.load(path)
    path.write_text(text)
    index = folder / INDEX_FILE
    lines = index.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"step": 10', b'"step": 12')
    index.write_bytes(b"\n".join(lines))
    with pytest.raises(HistoryCorruptError, match=r"line 2 of .*index.jsonl fails its checksum.*after the audit at step 0"):
        AuditHistory.load(path)


def test_torn_last_index_line_is_left_out_and_cut_by_the_next_writer(auditor, tmp_path, caplog):
    path, folder = saved(auditor, tmp_path)
    index = folder / INDEX_FILE
    complete = index.read_bytes()
    index.write_bytes(complete + complete.split(b"\n")[0][:40])  # a crash in the middle of an append
    with caplog.at_level(logging.WARNING, logger="mia_guard.audit.storage"):
        assert AuditHistory.load(path).steps == [0, 10, 20]
    assert "incomplete line" in caplog.text
    writer = HistoryWriter.open(path)
    assert index.read_bytes() == complete
    writer.append(_at_step(auditor.history.last, 30))
    assert AuditHistory.load(path).steps == [0, 10, 20, 30]


def test_truncate_after_drops_later_audits_and_their_files(auditor, tmp_path):
    path, folder = saved(auditor, tmp_path)
    writer = HistoryWriter.open(path)
    writer.truncate_after(10)
    assert not (folder / "000002-step20.json").exists()
    writer.append(_at_step(auditor.history.last, 15))
    assert AuditHistory.load(path).steps == [0, 10, 15]


def test_single_file_histories_of_earlier_versions_still_load_and_migrate(auditor, tmp_path):
    old = tmp_path / "history.json"
    atomic_write_json(old, auditor.history.to_dict())  # how mia_guard 0.2 wrote it: one document
    loaded = AuditHistory.load(old)
    assert loaded.steps == [0, 10, 20]
    assert torch.equal(loaded.last.stats.nll, auditor.history.last.stats.nll)
    with pytest.raises(ValueError, match="single-file history"):
        HistoryWriter.open(old)
    loaded.store(old)
    assert json.loads(old.read_text())["schema_version"] == 2
    assert AuditHistory.load(old).steps == [0, 10, 20]


def test_saving_again_replaces_the_store_and_removes_the_old_folder(auditor, tmp_path):
    path, first = saved(auditor, tmp_path)
    auditor.history.save(path, include_stats=False)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0] != first
    assert AuditHistory.load(path).last.stats is None


@pytest.mark.parametrize("refused", ["audit file", "index line"])
def test_a_failed_append_loses_nothing_written_before(auditor, tmp_path, refused):
    """A file-size limit makes the kernel refuse a write midway, as a full disk would: the
    append raises, its partial files and index bytes are removed, and every earlier audit
    still loads."""
    small = _at_step(auditor.history.last, 0)
    small.stats = None  # figures only: the index outgrows an audit file after a few dozen audits
    writer = empty_store(auditor, tmp_path)
    for step in range(40):
        writer.append(_at_step(small, step))
    index = writer.folder / INDEX_FILE
    record = writer.folder / "000000-step0.json"
    assert index.stat().st_size > record.stat().st_size + 1000
    limit = record.stat().st_size // 2 if refused == "audit file" else index.stat().st_size + 100
    script = textwrap.dedent(f"""
        import dataclasses, resource, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from audit_histories import audited
        from mia_guard.audit.storage import HistoryWriter
        result = dataclasses.replace(audited({{40: 1.0}}, n=120).history.last, stats=None)
        writer = HistoryWriter.open({str(tmp_path / "history.json")!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        try:
            writer.append(result)
        except OSError as err:
            print("refused:", err.strerror)
    """)
    before = index.read_bytes()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "refused: File too large" in out.stdout, out.stdout + out.stderr
    assert index.read_bytes() == before
    assert sorted(p.name for p in writer.folder.iterdir() if "step40" in p.name or p.name.startswith(".")) == []
    loaded = AuditHistory.load(tmp_path / "history.json")
    assert loaded.steps == list(range(40))
    writer = HistoryWriter.open(tmp_path / "history.json")  # and the run can go on recording
    writer.append(_at_step(small, 41))
    assert AuditHistory.load(tmp_path / "history.json").steps[-1] == 41


def _at_step(result, step):
    import dataclasses

    return dataclasses.replace(result, step=step)


def test_failed_audits_are_index_lines_kept_in_step_order(auditor, tmp_path):
    writer = empty_store(auditor, tmp_path)
    writer.append(_at_step(auditor.history.results[0], 0))
    writer.record_failure(5, "scoring the canaries failed: the disk is full")
    writer.append(_at_step(auditor.history.last, 10))
    loaded = AuditHistory.load(tmp_path / "history.json")
    assert loaded.steps == [0, 10]
    assert loaded.failures == [{"step": 5, "reason": "scoring the canaries failed: the disk is full"}]
    assert sorted(p.name for p in writer.folder.iterdir() if "step5" in p.name) == []  # a line, no files
    writer.truncate_after(4)
    assert AuditHistory.load(tmp_path / "history.json").failures == []
    with pytest.raises(ValueError, match="before the last recorded step"):
        HistoryWriter.open(tmp_path / "history.json").record_failure(-1, "earlier")
