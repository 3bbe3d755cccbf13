"""The one precision rule: which dtype the matmuls of the SAC update, the ensemble's fit and the
model rollouts run in (``TrainConfig.precision``; docs/precision.md).

``float32`` runs everything in float32. ``bf16`` runs those three under bfloat16 autocast: the
linear layers' matmuls in bf16, while the weights, the optimiser state, every network output
(the networks cast their outputs back to float32), the losses and the log-variances stay float32.
``auto`` picks bf16 only where the hardware has bfloat16 matrix units (a CPU with AVX512-BF16 or
AMX-BF16, a CUDA device that supports bf16) and float32 elsewhere: on a CPU without such units
bf16 matmuls are emulated and slower than float32.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager, Iterable, Optional

if TYPE_CHECKING:
    import torch

# /proc/cpuinfo flags of CPUs with bfloat16 matrix instructions (x86: AVX512-BF16, AMX).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> Iterable[str]:
    """The flags of this machine's first CPU ('' where the file cannot be read, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return ()


def bf16_units(device: "torch.device", flags: Optional[Iterable[str]] = None) -> bool:
    """Whether ``device`` has bfloat16 matrix units; ``flags``: the CPU flags (read from
    /proc/cpuinfo when None)."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return any(flag in CPU_BF16_FLAGS for flag in (cpu_flags() if flags is None else flags))
    return False


def choose_precision(spec: str, device: "torch.device", flags: Optional[Iterable[str]] = None) -> str:
    """``float32`` or ``bf16`` for this spec on this device."""
    if spec == "auto":
        return "bf16" if bf16_units(device, flags) else "float32"
    return spec


def autocast(device: "torch.device", precision: str) -> ContextManager:
    """The context the SAC update, the ensemble's fit and the rollouts run in: bfloat16 autocast
    for ``bf16``, nothing for ``float32`` (``precision`` as chosen by ``choose_precision``)."""
    import torch

    if precision == "bf16":
        # No cast cache: autocast would otherwise keep the first bf16 copy of each weight for the
        # whole region, and a region that holds several optimiser steps (a model fit) would
        # train on stale copies.
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()
