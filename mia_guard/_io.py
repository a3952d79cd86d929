"""Atomic file writes and compact array encoding for JSON files.

Every file mia_guard writes goes through :func:`atomic_write_text` (temp file in the
same directory, fsync, rename), so a crash mid-write leaves either the old file or
the new one, never a truncated one.
"""

from __future__ import annotations

import base64
import json
import os
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


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialize ``obj`` as indented JSON (NaN written as null) and write it atomically."""
    return atomic_write_text(path, json.dumps(_nan_to_none(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file ``path``; ``what`` names it in errors ("canary file", "audit history").

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid UTF-8 JSON (corrupt or truncated).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
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
