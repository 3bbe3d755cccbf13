"""How a training process uses its CPU: torch's intra-op threads, and glibc malloc keeping the
memory the updates free (issue 25; docs/precision.md#memory-that-the-updates-free).

Every process that trains calls ``set_up``: ``train`` and a seed group (``torch_threads``), and
every Ray actor (the CPUs Ray gave it); the benchmarks call it too, so that they time what a run
does.

Why the allocator: a SAC update allocates and frees some twenty activation and gradient buffers
of 0.1-1 MB. glibc returns freed memory at the top of its heap to the system once more than
``M_TRIM_THRESHOLD`` of it is free there (by default at most twice the largest freed block, a few
MB), so every update maps its buffers afresh and pays a page fault per 4 KiB page written: 340-540
faults and 12-15 % of the update's time, 5-10 % of an ensemble fit epoch's, on an AMD EPYC (Zen
5) with one or two threads (docs/precision.md#memory-that-the-updates-free). Fixed
thresholds keep up to ``TRIM_THRESHOLD`` of freed memory in the process for reuse and serve
blocks up to ``MMAP_THRESHOLD`` from the heap; larger ones (replay buffers, a rollout's batch)
still come from and go back to the system. The cost is memory: a process keeps up to
``TRIM_THRESHOLD`` of what it freed, resident, until it needs it again.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Optional

import torch

# glibc's mallopt parameters (malloc.h) and the values set
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2 ** 20

# a user's own setting of these in the environment wins over ours
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_applied: Optional[bool] = None


def keep_freed_memory() -> bool:
    """Set glibc malloc's mmap and trim thresholds (module docstring), once per process. True
    when they are set; False on another C library (musl, macOS, Windows: nothing to do there) or
    where the environment sets them already (``MALLOC_*_THRESHOLD_`` or a ``glibc.malloc``
    tunable in ``GLIBC_TUNABLES``)."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success, 0 for a value it refuses
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def set_up(threads: Optional[float] = None) -> None:
    """Prepare this process to train: ``threads`` intra-op threads for torch (at least one; None:
    torch's choice stays) and the allocator's thresholds (``keep_freed_memory``)."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    keep_freed_memory()
