"""What a W&B run holds on disk: a reader of the ``run-<id>.wandb`` files in a run's
``RUN/wandb/`` folders (docs/sweeps.md, "W&B": what counts as sent).

A ``.wandb`` file is W&B's transaction log: a 7-byte header (``:W&B``, the magic number 0xBEE1
and a version byte), then blocks of 32 KiB holding records, each a 7-byte header (a CRC-32 of
the type byte and the data, the data's length, the type: whole, first, middle or last part of a
record that spans blocks) and the data, a serialised ``wandb_internal_pb2.Record`` (history,
summary, exit, ...). A block's last bytes, too few for a header, are zeros. A process killed
while its W&B service was writing leaves a file whose tail is cut; the reader returns the
records before it, so "held" means durably written, what ``wandb sync`` uploads.

Only the record protobufs come from wandb (imported when a file is read); the format itself is
read here, as the pinned wandb 0.31 has no Python reader of its own.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_BYTES = 32 * 1024
RECORD_HEADER = struct.Struct("<IHB")  # crc32 of type byte + data, data length, type
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def record_payloads(data: bytes) -> Iterator[bytes]:
    """The serialised records of a ``.wandb`` file's bytes, up to the first one that is cut or
    damaged (a killed writer's tail)."""
    if not data.startswith(FILE_HEADER):
        return
    pos, parts = len(FILE_HEADER), []
    while True:
        room = BLOCK_BYTES - pos % BLOCK_BYTES
        if room < RECORD_HEADER.size:  # the block's zero padding
            pos += room
            continue
        if pos + RECORD_HEADER.size > len(data):
            return
        crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        start, end = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
        if kind not in (WHOLE, FIRST, MIDDLE, LAST) or end > len(data):
            return
        chunk = data[start:end]
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos = end
        if kind == WHOLE:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        else:
            if not parts:
                return
            parts.append(chunk)
            if kind == LAST:
                yield b"".join(parts)
                parts = []


@dataclass
class RunFile:
    """What one ``.wandb`` file (one process's part of a W&B run) holds: its history rows (each
    key's value decoded from JSON, a media value such as an image as a dict of its fields, and
    ``_step``) and its exit code (None when the process never finished the run)."""

    path: Path
    history: List[Dict[str, Any]] = field(default_factory=list)
    exit_code: Optional[int] = None


def read_run_file(path: Path) -> RunFile:
    from wandb.proto import wandb_internal_pb2 as pb

    out = RunFile(Path(path))
    for payload in record_payloads(Path(path).read_bytes()):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001  (a record this wandb cannot parse ends what is held)
            break
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: Dict[str, Any] = {}
            for item in record.history.item:
                *outer, last = list(item.nested_key) or [item.key]  # a media value's fields are nested
                place = row
                for key in outer:
                    place = place.setdefault(key, {})
                place[last] = json.loads(item.value_json)
            row["_step"] = record.history.step.num
            out.history.append(row)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def run_files(run_dir: Path, run_id: str, offline_only: bool = True) -> List[RunFile]:
    """The W&B run ``run_id``'s files in ``RUN/wandb/``, in the order its processes started
    (the order `wandb sync` uploads them in): the offline folders, or all with
    ``offline_only=False``."""
    folder = Path(run_dir) / "wandb"
    if not folder.is_dir():
        return []
    found = []
    for sub in folder.iterdir():
        name = sub.name
        if sub.is_symlink() or not sub.is_dir() or (offline_only and not name.startswith("offline-run-")):
            continue
        log = sub / f"run-{run_id}.wandb"
        if name.startswith(("offline-run-", "run-")) and log.is_file():
            found.append((name.split("run-", 1)[1], log))
    return [read_run_file(log) for _, log in sorted(found)]
