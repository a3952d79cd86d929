"""Read an offline Weights & Biases run back (``run-<id>.wandb``), for the tracker tests.

The file is a LevelDB-style record log after a 7-byte header (``:W&B``, a 2-byte magic,
a version byte): 32 KiB blocks of records with a 7-byte header (CRC, length, kind:
1 full, 2 first, 3 middle, 4 last), each record a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(path: Path) -> list[dict]:
    """Every ``run.log`` row of the run, in order."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({_key(i): json.loads(i.value_json) for i in record.history.item})
    return rows


def summary(path: Path) -> dict:
    """The run summary as its last updates left it."""
    out: dict = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            out.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return out


def run_file(directory: Path) -> Path:
    """The single offline run file under ``directory`` (W&B's ``dir``)."""
    files = list(Path(directory).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]
