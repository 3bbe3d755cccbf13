"""Files replaced whole or not at all: the new content goes to a temporary file beside the
target, which then takes the target's place in one ``os.replace`` (atomic on POSIX filesystems),
so that a process killed while writing leaves the old file or the new one, never a torn one."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

# writers that read the file's format from its suffix (matplotlib's savefig, ffmpeg's container)
KEEP_SUFFIX = (".png", ".mp4", ".gif")


def temporary_beside(path: Path) -> Path:
    """Where ``path``'s new content is written first: ``NAME.tmp`` beside it (``STEM.tmp.png`` for
    a PNG, an MP4 or a GIF, whose writers read the format from the suffix)."""
    if path.suffix in KEEP_SUFFIX:
        return path.with_name(f"{path.stem}.tmp{path.suffix}")
    return path.with_name(path.name + ".tmp")


@contextmanager
def replacing(path: Union[str, Path]) -> Iterator[Path]:
    """Yields the temporary path to write; when the block ends without an exception, it replaces
    ``path``. An exception leaves ``path`` as it was (and the temporary file is removed)."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomic(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """``path`` holds ``data`` (bytes, or text as UTF-8), replaced whole."""
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
