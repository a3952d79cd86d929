"""Atomic file writes, checksummed JSON and compact array encoding.

Every file mia_guard writes goes through :func:`atomic_write_text` (temp file in the
same directory, fsync, rename), so a crash mid-write leaves either the old file or
the new one, never a truncated one.

Checksummed JSON (:func:`seal_json`, ``atomic_write_json(..., checksum=True)``): the
document's first key is ``"checksum": "sha256:<hex>"``, the SHA-256 of the document's
bytes with the hex digits written as zeros. :func:`read_json` verifies it whenever it is
present, so a file edited or damaged after it was written is refused
(:class:`CorruptFileError`) instead of being used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + ``os.replace``)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; creates parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any, *, checksum: bool = False) -> Path:
    """Serialize ``obj`` as indented JSON (NaN written as null) and write it atomically;
    with ``checksum=True`` sealed with its SHA-256 (see :func:`seal_json`)."""
    if checksum:
        return atomic_write_bytes(path, seal_json(obj, indent=2))
    return atomic_write_text(path, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


class CorruptFileError(ValueError):
    """A file's content does not match the checksum it was written with."""


CHECKSUM_KEY = "checksum"
_PLACEHOLDER = "sha256:" + "0" * 64
_SEAL = re.compile(rb'^\{\s*"checksum": "sha256:([0-9a-f]{64})"')


def seal_json(obj: dict, *, indent: int | None = None) -> bytes:
    """``obj`` as JSON bytes (one line when ``indent`` is None, newline-terminated) whose first
    key is ``"checksum": "sha256:<hex>"``: the digest of these bytes with the hex zeroed."""
    if not isinstance(obj, dict) or CHECKSUM_KEY in obj:
        raise ValueError(f"seal_json takes a dict without a {CHECKSUM_KEY!r} key")
    text = json.dumps({CHECKSUM_KEY: _PLACEHOLDER, **_nan_to_none(obj)}, indent=indent, allow_nan=False) + "\n"
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    return data.replace(_PLACEHOLDER.encode(), f"sha256:{digest}".encode(), 1)


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` starts like a document written by :func:`seal_json`."""
    return _SEAL.match(data) is not None


def unseal_json(data: bytes, what: str) -> dict:
    """Parse JSON bytes written by :func:`seal_json` and verify their checksum; returns the
    document without the checksum key. ``what`` names the document in errors.

    Raises:
        CorruptFileError: no checksum, or the bytes do not hash to it (edited or damaged).
        ValueError: not valid UTF-8 JSON.
    """
    match = _SEAL.match(data)
    if match is None:
        raise CorruptFileError(f"{what} has no checksum where one was written; it was replaced or damaged")
    expected = match.group(1).decode()
    zeroed = data[: match.start(1)] + b"0" * 64 + data[match.end(1) :]
    actual = hashlib.sha256(zeroed).hexdigest()
    if actual != expected:
        raise CorruptFileError(
            f"{what} fails its checksum (written as sha256:{expected[:12]}..., its content now hashes to "
            f"sha256:{actual[:12]}...): it was edited, truncated or damaged after it was written"
        )
    try:
        document = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # only if the writer itself wrote bad JSON
        raise ValueError(f"{what} is not valid JSON ({err})") from err
    del document[CHECKSUM_KEY]
    return document


def read_json(path: str | os.PathLike, what: str, *, require_checksum: bool = False) -> Any:
    """Parse the JSON file ``path``; ``what`` names it in errors ("canary file", "audit history").

    A checksum written by :func:`seal_json` is verified and removed; ``require_checksum``
    refuses files without one.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: the file fails its checksum (or lacks a required one).
        ValueError: the file is not valid UTF-8 JSON (corrupt or truncated).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if require_checksum or is_sealed(data):
        return unseal_json(data, f"{what} {path}")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); it is corrupt or truncated") from err


def check_format(
    data: Any, *, fmt: str, version: int, what: str, source: Any, version_key: str = "schema_version", fix: str = ""
) -> dict:
    """Refuse ``data`` unless it is a dict with ``format == fmt`` and ``data[version_key] == version``.

    ``what`` names the kind of file ("audit history"), ``source`` where it came from, and
    ``fix`` says what to do (appended to the message).
    """
    hint = f"; {fix}" if fix else ""
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{source} is not a mia_guard {what} (format is {found!r}, expected {fmt!r}){hint}")
    if data.get(version_key) != version:
        raise ValueError(
            f"{source} has {what} schema version {data.get(version_key)!r}; this mia_guard reads version {version}{hint}"
        )
    return data


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def encode_array(array: np.ndarray) -> dict:
    """Encode a numeric or bool array as ``{"dtype", "shape", "b64"}`` (little-endian bytes)."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return {
        "dtype": dtype.str,
        "shape": list(array.shape),
        "b64": base64.b64encode(array.astype(dtype, copy=False).tobytes()).decode("ascii"),
    }


def decode_array(blob: dict) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    try:
        raw = base64.b64decode(blob["b64"], validate=True)
        return np.frombuffer(raw, dtype=np.dtype(blob["dtype"])).reshape(blob["shape"]).copy()
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"corrupt encoded array ({err}); the file was edited or truncated") from err
