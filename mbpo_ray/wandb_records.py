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
from typing import Any, Dict, Iterator, List, Optional, Set

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


@dataclass
class Held:
    """What a W&B run holds, as its logger needs it: the ``env_steps`` of its epoch rows, those
    of its last curve row (None without one), the history step after its last row, and whether
    its last part finished (exit code 0)."""

    epochs: Set[Any]
    curve_at: Optional[Any]
    next_step: int
    finished: bool = False


def offline_held(run_dir: Path, run_id: str) -> Held:
    """``Held`` of the run ``run_id``'s offline files in ``run_dir``."""
    parts = run_files(run_dir, run_id)
    rows = [row for part in parts for row in part.history]
    curves = [row.get("env_steps") for row in rows if "curve" in row]
    return Held({row["env_steps"] for row in rows if "env_steps" in row and "curve" not in row},
                curves[-1] if curves else None, 1 + max((row["_step"] for row in rows), default=-1),
                bool(parts) and parts[-1].exit_code == 0)


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN is NaN


def history_mismatch(run_dir: Path, run_id: str) -> Optional[str]:
    """None when the W&B run ``run_id``'s offline files in ``run_dir`` hold, in upload order,
    every epoch of metrics.jsonl once with its values, then the curve at the last env step, with
    rising history steps, and the last part finished; else what is wrong, in one line."""
    from mbpo_ray.run_dir import RunDirectory

    metrics = RunDirectory(run_dir).read_metrics()
    parts = run_files(run_dir, run_id)
    rows = [row for part in parts for row in part.history]
    if not rows:
        return f"{run_dir}: no W&B history in its offline runs ({len(parts)} folder(s) of run {run_id})"
    epochs = [row.get("env_steps") for row in rows if "curve" not in row]
    wanted = [record["env_steps"] for record in metrics]
    if epochs != wanted:
        return f"{run_dir}: W&B holds the epochs at env steps {epochs}, metrics.jsonl {wanted}"
    for row, record in zip((row for row in rows if "curve" not in row), metrics):
        for key, value in record.items():
            if not _same(row.get(key), value):
                return (f"{run_dir}: the epoch at {record['env_steps']} env steps has {key} {row.get(key)!r} on W&B, "
                        f"{value!r} in metrics.jsonl")
    if "curve" not in rows[-1] or rows[-1].get("env_steps") != wanted[-1]:
        return f"{run_dir}: the W&B run does not end with the curve at {wanted[-1] if wanted else 0} env steps"
    steps = [row["_step"] for row in rows]
    if steps != sorted(set(steps)):
        return f"{run_dir}: W&B history steps {steps} do not rise"
    if parts[-1].exit_code != 0:
        return f"{run_dir}: the W&B run's last part did not finish (exit code {parts[-1].exit_code})"
    return None
