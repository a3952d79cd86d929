"""One writer per output directory: a live holder is named, a killed one is taken over, release frees it."""

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from mia_guard.audit import lock as lock_module
from mia_guard.audit.lock import LOCK_FILE, OutputDirectoryLock, OutputDirectoryLocked


def hold_in_another_process(directory):
    """A child process that takes the lock, says so, and waits for stdin to close."""
    script = textwrap.dedent(f"""
        import sys
        from mia_guard.audit.lock import OutputDirectoryLock
        lock = OutputDirectoryLock({str(directory)!r}).acquire()
        print("locked", flush=True)
        sys.stdin.read()
        lock.release()
        print("released", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_is_refused_with_the_holder_and_the_fix(tmp_path):
    child = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(OutputDirectoryLocked) as caught:
            OutputDirectoryLock(tmp_path).acquire()
        message = str(caught.value)
        assert f"process {child.pid} on host {socket.gethostname()}" in message
        assert "started 20" in message and "-c" in message  # start time and command line
        assert "another output directory" in message
        assert caught.value.holder["pid"] == child.pid
    finally:
        child.stdin.close()
        assert child.stdout.readline().strip() == "released"
        child.wait()
    with OutputDirectoryLock(tmp_path) as lock:  # released on normal end: free again
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()  # released: the file is gone


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    child = hold_in_another_process(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with caplog.at_level(logging.WARNING, logger="mia_guard.audit.lock"):
        lock = OutputDirectoryLock(tmp_path).acquire()
    assert lock.held
    assert f"ended without releasing it (process {child.pid}" in caplog.text
    lock.release()


def test_the_same_process_takes_over_from_an_unfinished_earlier_lock(tmp_path, caplog):
    first = OutputDirectoryLock(tmp_path).acquire()
    with caplog.at_level(logging.WARNING, logger="mia_guard.audit.lock"):
        second = OutputDirectoryLock(tmp_path).acquire()
    assert second.held and not first.held
    assert "earlier run in this process" in caplog.text
    second.release()


def test_an_abandoned_lock_object_frees_its_directory(tmp_path):
    OutputDirectoryLock(tmp_path).acquire()  # dropped at once, never released explicitly
    child = hold_in_another_process(tmp_path)
    child.stdin.close()
    child.wait()


def test_without_file_locks_the_run_goes_on_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lock_module, "fcntl", None)
    with caplog.at_level(logging.WARNING, logger="mia_guard.audit.lock"):
        OutputDirectoryLock(tmp_path).acquire()
    assert "no file locks on this platform" in caplog.text


def test_a_second_training_run_on_a_locked_directory_fails_before_writing(tmp_path):
    from trainer_runs import canaries

    from mia_guard.callbacks import AuditLoop
    from mia_guard.experiments.demo_assets import byte_tokenizer

    output = tmp_path / "mia"
    child = hold_in_another_process(output)
    try:
        with pytest.raises(OutputDirectoryLocked, match=f"process {child.pid} on host"):
            AuditLoop(canaries(), byte_tokenizer(), output_dir=output)
        assert sorted(p.name for p in output.iterdir()) == [LOCK_FILE]  # no canary file, no history
    finally:
        child.stdin.close()
        child.wait()
    loop = AuditLoop(canaries(), byte_tokenizer(), output_dir=output)  # the first run ended: free
    assert loop.session.lock.held
    loop.session.close()
    assert not loop.session.lock.held
