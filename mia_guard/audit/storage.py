"""The audit history on disk: append-only, one checksummed file per audit, statistics loaded lazily.

A history saved at ``PATH`` (a run's ``<output_dir>/history.json``) is::

    PATH                             manifest: the run's constants (canary hash, membership,
                                     FPR levels, confidence) and the name of its record folder;
                                     written once per store
    <stem>-<token>/index.jsonl       one line per audit, only ever appended: step, time, and the
                                     name, size and SHA-256 of each of the audit's files (or, for
                                     an audit that failed, why)
    <stem>-<token>/<seq>-step<step>.json        the audit's figures (metrics, scores, notes, ...)
    <stem>-<token>/<seq>-step<step>.stats.json  its token statistics, read only when used

Every file and every index line is sealed with its own SHA-256 (:func:`mia_guard._io.seal_json`),
and the index also records each file's digest, so an edited, truncated, swapped or missing
file is reported with its path and audit step instead of being used
(:class:`HistoryCorruptError`). What one audit writes does not depend on how many came
before: two files and one index line.

Crash safety: an audit's files are written atomically before its index line is appended
(one ``write`` + ``fsync``). A crash before the append leaves unreferenced files that the
next append of that audit number replaces; a crash during it leaves a torn last line,
which readers skip with a warning (that audit was never recorded) and a writer cuts off.
A failed append (a full disk) cuts the index back to its last complete line, so nothing
written before is lost; the writer keeps the audit and writes it, in order, before the
next one it is given.

Old single-file histories (schema version 1, everything in ``history.json``) still load;
``AuditHistory.load(path).store(path)`` rewrites one in this layout (a resumed run does so).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .._io import (
    CorruptFileError,
    atomic_write_bytes,
    check_format,
    decode_array,
    encode_array,
    read_json,
    seal_json,
    unseal_json,
)

logger = logging.getLogger(__name__)

HISTORY_FORMAT = "mia_guard.history"
#: the single-file layout (schema 1) and this one (schema 2)
LEGACY_SCHEMA_VERSION = 1
STORE_SCHEMA_VERSION = 2
INDEX_FILE = "index.jsonl"


class HistoryCorruptError(CorruptFileError):
    """A file of a saved history is missing, damaged or does not belong to it."""


class LegacyHistoryError(ValueError):
    """The history is an old single-file one: it can be read, not appended to."""


@dataclass(frozen=True)
class WriteReceipt:
    """What one :meth:`HistoryWriter.append` wrote: ``bytes`` on disk and wall ``seconds``."""

    step: int
    bytes: int
    seconds: float


# ---------------------------------------------------------------------------- reading
@dataclass
class StoredHistory:
    """A saved history as plain data (``AuditHistory.load`` builds the objects from it).

    Attributes:
        canary_hash, is_member, fprs, confidence: the run's constants.
        audits: per audit, its figures (``AuditResult.to_dict`` without statistics) and a
            function reading its token statistics (``TokenStats.to_dict`` form), or ``None``
            when the audit kept none.
        failures: audits that could not run, ``{"step", "reason"}`` in order.
        legacy: for an old single-file history, its whole document (then the rest is empty).
    """

    canary_hash: str = ""
    is_member: np.ndarray | None = None
    fprs: tuple[float, ...] = ()
    confidence: float = 0.0
    audits: list[tuple[dict, Callable[[], dict] | None]] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    legacy: dict | None = None


def read_history(path: str | os.PathLike) -> StoredHistory:
    """The history saved at ``path`` (a manifest, or an old single-file history).

    Figures of every audit are read and verified now; token statistics only when their
    reader is called (``AuditResult.stats`` does on first use), verified then.

    Raises:
        FileNotFoundError: no history at ``path``.
        HistoryCorruptError: a file or index line fails its checksum, or a listed file is
            missing (the message names the file and the audit step).
        ValueError: not a mia_guard history, or another schema version.
    """
    path = Path(path)
    manifest = read_json(path, "audit history")
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(manifest, dict) and manifest.get("format") == HISTORY_FORMAT and version == LEGACY_SCHEMA_VERSION:
        return StoredHistory(legacy=manifest)
    _check_manifest(manifest, path)
    try:
        is_member = decode_array(manifest["is_member"])
    except ValueError as err:
        raise HistoryCorruptError(f"the audit history {path}: {err}") from err
    folder = path.parent / manifest["records"]
    audits, failures = [], []
    for entry in read_index(folder, path)[0]:
        if "failure" in entry:
            failures.append({"step": entry["step"], "reason": entry["failure"]})
            continue
        figures = _read_record(folder, entry["record"], entry["step"], "figures")
        stats = entry.get("stats")
        reader = None if stats is None else _stats_reader(folder, stats, entry["step"])
        audits.append((figures, reader))
    return StoredHistory(manifest["canary_hash"], is_member, tuple(manifest["fprs"]), manifest["confidence"], audits,
                         failures)


def _stats_reader(folder: Path, listed: dict, step: int) -> Callable[[], dict]:
    return lambda: _read_record(folder, listed, step, "token statistics")


def read_index(folder: Path, manifest: Path) -> tuple[list[dict], int]:
    """The verified index entries of ``folder`` and the byte length of its complete lines.

    A torn last line (a crash while it was appended) is left out with a warning; any other
    damaged line raises :class:`HistoryCorruptError`.
    """
    index = folder / INDEX_FILE
    if not folder.is_dir():
        raise HistoryCorruptError(
            f"the audit history {manifest} lists its audits in {folder}, which is missing; the folder was moved "
            "or deleted after the run (copy the history file together with that folder)"
        )
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        raise HistoryCorruptError(f"the audit history's index {index} is missing; the folder was damaged") from None
    entries, good = [], 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if number == len(lines):  # text after the last newline: an append that never finished
            if line:
                logger.warning("mia_guard: %s ends in an incomplete line (the run stopped while recording an "
                               "audit); that audit is left out", index)
            break
        try:
            entry = unseal_json(line + b"\n", f"line {number} of {index}")
        except ValueError as err:
            after = f", after the audit at step {entries[-1]['step']}" if entries else ""
            raise HistoryCorruptError(f"{err}{after}; the index was edited or damaged") from None
        entries.append(entry)
        good += len(line) + 1
    return entries, good


def _read_record(folder: Path, listed: dict, step: int, what: str) -> dict:
    """One audit file, checked against the digest the index lists for it and its own seal."""
    path = folder / listed["file"]
    label = f"the {what} of the audit at step {step} ({path})"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HistoryCorruptError(
            f"{label} are missing; the history folder was changed after the run. Restore the file, or resume "
            f"training from a checkpoint before step {step} so the audits from there on are written again"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != listed["sha256"] or len(data) != listed["bytes"]:
        raise HistoryCorruptError(
            f"{label} do not match the index (sha256 {digest[:12]}..., {len(data)} bytes; the index lists "
            f"{listed['sha256'][:12]}..., {listed['bytes']} bytes): the file was edited, truncated or replaced"
        )
    return unseal_json(data, label)


def _check_manifest(manifest: object, path: Path) -> None:
    check_format(manifest, fmt=HISTORY_FORMAT, version=STORE_SCHEMA_VERSION, what="audit history", source=path,
                 fix="this mia_guard reads versions 1 and 2")
    missing = [k for k in ("canary_hash", "is_member", "fprs", "confidence", "records") if k not in manifest]
    if missing:
        raise HistoryCorruptError(f"the audit history {path} lacks {', '.join(missing)}; it was edited")
    records = manifest["records"]
    if not isinstance(records, str) or Path(records).name != records:
        raise HistoryCorruptError(f"the audit history {path} names an invalid record folder {records!r}")


# ---------------------------------------------------------------------------- writing
class AuditRecord(Protocol):
    """What :meth:`HistoryWriter.append` needs of an audit (an ``AuditResult``)."""

    step: int
    timestamp: float
    stats: Any

    def to_dict(self, include_stats: bool = True) -> dict: ...


class HistoryWriter:
    """Appends audits to the history saved at ``path`` (one writer per output directory).

    Build with :meth:`create` (a new store, optionally with audits already) or :meth:`open`
    (continue an existing one, e.g. on resume).
    """

    def __init__(self, path: Path, folder: Path, entries: list[dict]) -> None:
        self.path = path
        self.folder = folder
        self.entries = entries
        #: audits and failures not written yet (an append failed): written first by the next one
        self.pending: list[AuditRecord | dict] = []

    @property
    def steps(self) -> list[int]:
        return [e["step"] for e in self.entries]

    @classmethod
    def create(cls, path: str | os.PathLike, canary_hash: str, is_member: np.ndarray, fprs: Sequence[float],
               confidence: float, results: Sequence[AuditRecord] = (), failures: Sequence[dict] = ()) -> "HistoryWriter":
        """A new store at ``path`` for a run with these constants, holding ``results`` (audits
        already made) and ``failures`` (``{"step", "reason"}``); replaces what ``path`` held.

        The new record folder is complete before the manifest switches to it (atomically),
        and only then is the previous folder removed, so ``path`` is readable throughout.
        """
        path = Path(path)
        previous = _current_folder(path)
        folder = path.parent / f"{path.stem}-{secrets.token_hex(4)}"
        manifest = {
            "format": HISTORY_FORMAT,
            "schema_version": STORE_SCHEMA_VERSION,
            "canary_hash": canary_hash,
            "is_member": encode_array(np.asarray(is_member, dtype=bool)),
            "fprs": [float(f) for f in fprs],
            "confidence": float(confidence),
            "records": folder.name,
        }
        folder.mkdir(parents=True)
        try:
            (folder / INDEX_FILE).touch()
            writer = cls(path, folder, [])
            writer.pending = sorted([*results, *failures], key=_step_of)
            writer._flush()
            atomic_write_bytes(path, seal_json(manifest, indent=2))
        except BaseException:  # e.g. a full disk: the manifest still names the previous folder
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if previous is not None and previous != folder and previous.is_dir():
            shutil.rmtree(previous, ignore_errors=True)
        return writer

    @classmethod
    def open(cls, path: str | os.PathLike) -> "HistoryWriter":
        """Continue the store at ``path``; a torn last index line is cut off.

        Raises:
            LegacyHistoryError: ``path`` is an old single-file history (rewrite it with
                ``AuditHistory.load(path).store(path)``).
            HistoryCorruptError: see :func:`read_history`.
        """
        path = Path(path)
        manifest = read_json(path, "audit history")
        if isinstance(manifest, dict) and manifest.get("schema_version") == LEGACY_SCHEMA_VERSION:
            raise LegacyHistoryError(f"{path} is a single-file history (schema 1); rewrite it with "
                                     "AuditHistory.load(path).store(path)")
        _check_manifest(manifest, path)
        folder = path.parent / manifest["records"]
        entries, good = read_index(folder, path)
        _cut_index(folder / INDEX_FILE, good)
        return cls(path, folder, entries)

    def append(self, result: AuditRecord) -> WriteReceipt:
        """Write one audit, after whatever earlier appends could not write: its statistics and
        figures files, then its index line. Returns what the last write took.

        Raises:
            ValueError: ``result.step`` is before the last recorded audit's.
            OSError: the disk is full or unwritable; the store is left as it was and the
                audit is kept (:attr:`pending`) for the next append.
        """
        self._check_order(result.step)
        self.pending.append(result)
        return self._flush()

    def record_failure(self, step: int, reason: str) -> WriteReceipt:
        """Record an audit that could not run (an index line, no files); see :meth:`append`."""
        self._check_order(step)
        self.pending.append({"step": int(step), "reason": str(reason)})
        return self._flush()

    def _check_order(self, step: int) -> None:
        last = _step_of(self.pending[-1]) if self.pending else (self.entries[-1]["step"] if self.entries else None)
        if last is not None and step < last:
            raise ValueError(f"audit at step {step} is before the last recorded step {last}")

    def _flush(self) -> WriteReceipt:
        receipt = WriteReceipt(-1, 0, 0.0)
        while self.pending:
            receipt = self._write_one(self.pending[0])
            self.pending.pop(0)
        return receipt

    def _write_one(self, item: AuditRecord | dict) -> WriteReceipt:
        started = time.perf_counter()
        step = _step_of(item)
        stem = f"{len(self.entries):06d}-step{step}"
        entry: dict[str, Any] = {"seq": len(self.entries), "step": step}
        index = self.folder / INDEX_FILE
        before = index.stat().st_size
        try:
            if isinstance(item, dict):
                entry.update(timestamp=time.time(), failure=item["reason"])
            else:
                entry.update(timestamp=item.timestamp, stats=None)
                if item.stats is not None:
                    entry["stats"] = self._write(f"{stem}.stats.json", item.stats.to_dict())
                entry["record"] = self._write(f"{stem}.json", item.to_dict(include_stats=False))
            line = seal_json(entry)
            with open(index, "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            _cut_index(index, before)
            for name in (f"{stem}.stats.json", f"{stem}.json"):
                (self.folder / name).unlink(missing_ok=True)
            raise
        self.entries.append(entry)
        files = [entry.get("record"), entry.get("stats")]
        written = sum(f["bytes"] for f in files if f is not None) + len(line)
        return WriteReceipt(step, written, time.perf_counter() - started)

    def replace_last(self, result: AuditRecord) -> WriteReceipt:
        """Rewrite the last recorded audit, at ``result.step``, with ``result`` (an audit that
        gained figures after it was written: the final secret extraction)."""
        self.truncate_after(result.step - 1)
        return self.append(result)

    def truncate_after(self, step: int) -> None:
        """Forget the audits after ``step`` (resuming from a checkpoint at ``step``): the index is
        rewritten atomically without them, then their files are removed."""
        keep = [e for e in self.entries if e["step"] <= step]
        if len(keep) == len(self.entries):
            return
        dropped = self.entries[len(keep):]
        atomic_write_bytes(self.folder / INDEX_FILE, b"".join(seal_json(e) for e in keep))
        self.entries = keep
        self.pending = [item for item in self.pending if _step_of(item) <= step]
        for entry in dropped:
            for listed in (entry.get("record"), entry.get("stats")):
                if listed is not None:
                    (self.folder / listed["file"]).unlink(missing_ok=True)

    def _write(self, name: str, document: dict) -> dict:
        """Write one sealed audit file atomically; returns its index listing (name, digest, size)."""
        data = seal_json(document)
        atomic_write_bytes(self.folder / name, data)
        return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def reopen_store(path: str | os.PathLike, history: Any, step: int) -> HistoryWriter:
    """The writer of the store at ``path`` for a run resumed at ``step`` (later audits cut off).
    An old single-file history is rewritten as a store holding ``history`` (an
    ``AuditHistory``, already cut back to ``step``)."""
    try:
        writer = HistoryWriter.open(path)
    except LegacyHistoryError:
        logger.info("mia_guard: %s is a single-file history of an earlier version; rewriting it as an "
                    "append-only store", path)
        return history.store(path)
    writer.truncate_after(step)
    return writer


def _step_of(item: AuditRecord | dict) -> int:
    return int(item["step"] if isinstance(item, dict) else item.step)


def _current_folder(path: Path) -> Path | None:
    """The record folder the manifest at ``path`` points to, if it is a readable store manifest."""
    try:
        manifest = read_json(path, "audit history")
    except (OSError, ValueError):
        return None
    records = manifest.get("records") if isinstance(manifest, dict) else None
    if isinstance(records, str) and Path(records).name == records:
        return path.parent / records
    return None


def _cut_index(index: Path, length: int) -> None:
    """Truncate ``index`` to its first ``length`` bytes (dropping a torn or failed append)."""
    if index.stat().st_size != length:
        with open(index, "r+b") as handle:
            handle.truncate(length)
            os.fsync(handle.fileno())
