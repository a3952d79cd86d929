"""One writer per output directory: an exclusive lock that names its holder.

Two training runs writing audits into one directory would interleave their files and
silently lose one run's curve. :class:`OutputDirectoryLock` takes an exclusive
``flock`` on ``<directory>/.mia_guard.lock`` and writes its holder into the file (process
id, host, start time, command line). A second run meets :class:`OutputDirectoryLocked`,
which names that process and says what to do (another output directory).

The operating system drops the lock when its process ends, however it ends (a crash, a
kill, a lost node), so a lock left by a killed run never blocks: the next run takes it
and logs whose it was (a lock file that is still there was not released). Released
normally by :meth:`release` (also on ``with`` exit), which removes the file.
Within one process a directory is locked once; a later lock of the same directory in the
same process (a notebook re-running training after an exception) takes it over from the
earlier, unfinished one with a warning.

Locks are advisory and need a filesystem with working ``flock`` (local disks, NFSv4).
On platforms without ``fcntl`` the lock is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_FILE = ".mia_guard.lock"
#: directories locked by this process -> the lock object holding them (weak: a lock object
#: that is garbage collected releases its directory)
_HELD: "weakref.WeakValueDictionary[Path, OutputDirectoryLock]" = weakref.WeakValueDictionary()


class OutputDirectoryLocked(RuntimeError):
    """Another live process writes into the output directory.

    Attributes:
        holder: what the other process recorded (``pid``, ``host``, ``started``, ``command``).
    """

    def __init__(self, directory: Path, holder: dict[str, Any]) -> None:
        self.directory = directory
        self.holder = holder
        started = holder.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
        super().__init__(
            f"{directory} is in use by another mia_guard run: process {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {when} ({holder.get('command', '?')}). Two runs in one output "
            "directory would mix their audits; give this run another output directory (output_dir=...), or wait "
            "for that run to finish"
        )


class OutputDirectoryLock:
    """Exclusive lock on ``directory`` for this process (see the module docstring).

    Use as a context manager or call :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "OutputDirectoryLock":
        """Take the lock.

        Raises:
            OutputDirectoryLocked: another live process holds it.
        """
        if self.held:
            return self
        if fcntl is None:
            logger.warning("mia_guard: no file locks on this platform; make sure only one run writes to %s",
                           self.directory)
            return self
        key = self.directory.resolve()
        earlier = _HELD.get(key)
        if earlier is not None and earlier is not self:
            logger.warning("mia_guard: %s was still locked by an earlier run in this process that did not finish; "
                           "taking the lock over", self.directory)
            earlier.release()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = self._locked_descriptor()
        previous = _read_holder(fd)
        if previous:
            logger.warning(
                "mia_guard: taking over the lock of %s from a run that ended without releasing it (process %s on "
                "host %s)", self.directory, previous.get("pid", "?"), previous.get("host", "?"))
        _write_holder(fd, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:200] or sys.executable,
        })
        self._fd = fd
        _HELD[key] = self
        return self

    def release(self) -> None:
        """Give the lock up and remove the lock file (a process that opened it just before is
        turned away by the check in :meth:`_locked_descriptor` and retries on a new file)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            key = self.directory.resolve()
            if _HELD.get(key) is self:
                del _HELD[key]

    def _locked_descriptor(self) -> int:
        """A descriptor of the lock file, exclusively locked, whose file is still the one at
        :attr:`path` (not one a releasing process has just removed)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputDirectoryLocked(self.directory, holder) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                return fd
            os.close(fd)  # removed by its last holder after we opened it: try the new file

    def __enter__(self) -> "OutputDirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # an abandoned lock object frees its directory
        if getattr(self, "_fd", None) is not None:
            try:
                self.release()
            except OSError:
                pass


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "command": f"unreadable lock record {raw[:60]!r}"}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    os.fsync(fd)
