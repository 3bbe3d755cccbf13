"""The one device rule, used by ``train`` and by every Ray actor.

``TrainConfig.device`` is one of auto, cpu, cuda, cuda:N, mps. ``choose_device`` decides from
what this process has (and, inside a Ray actor, what Ray assigned it); ``resolve_device`` asks
torch for those facts. A device that is not there is a ConfigError naming what is there: never
a silent fall back to the CPU.

Inside a Ray actor, Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned (``ray.get_gpu_ids()``),
so the actor sees them as visible indices 0 .. len-1 and runs on the first; an actor that got no GPU runs
on the CPU. Which actors get a GPU is set by ``ray.*_gpus`` (checked in mbpo_ray.config).

``LOGICAL_GPUS_VARIABLE`` set to 1 in the environment says that the cluster's GPUs are logical
resources only (`mbpo-ray cluster rehearse`, which lays out a GPU cluster on a machine without
one): an actor that Ray assigned a GPU then runs on the CPU instead of stopping.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Sequence

from mbpo_ray.errors import ConfigError

if TYPE_CHECKING:
    import torch


FIRST_VISIBLE = 0  # "cuda" means the first GPU this process sees (Ray's assignment inside an actor)
LOGICAL_GPUS_VARIABLE = "MBPO_RAY_LOGICAL_GPUS"


def _present(cuda_count: int, mps_available: bool) -> str:
    """What this process has, e.g. "1 CUDA device" with its device names."""
    if cuda_count == 0:
        cuda = "no CUDA device"
    else:
        ids = ", ".join(f"cuda:{i}" for i in range(cuda_count))
        cuda = f"{cuda_count} CUDA device{'s' if cuda_count > 1 else ''} ({ids})"
    return cuda + (" and MPS" if mps_available else "")


def choose_device(spec: str, cuda_count: int, mps_available: bool,
                  gpu_ids: Optional[Sequence] = None) -> str:
    """The device to run on, as a string torch.device accepts.

    ``cuda_count`` and ``mps_available`` are what torch sees in this process. ``gpu_ids`` is
    None outside Ray, and ``ray.get_gpu_ids()`` inside a Ray actor.
    """
    if gpu_ids is not None:
        return _choose_for_actor(spec, cuda_count, list(gpu_ids))
    if spec == "auto":  # the first visible GPU if there is one; MPS only when asked for by name
        spec = "cuda" if cuda_count > 0 else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        if not mps_available:
            raise ConfigError(f"device='mps' is not available: MPS is not available here; this "
                              f"process sees {_present(cuda_count, mps_available)}")
        return "mps"
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        index = int(spec[5:]) if spec != "cuda" else FIRST_VISIBLE
        if index >= cuda_count:
            raise ConfigError(f"device={spec!r} is not available: this process sees "
                              f"{_present(cuda_count, mps_available)}")
        return f"cuda:{index}"
    raise ConfigError(f"device={spec!r} is not allowed: auto, cpu, cuda, cuda:N or mps")


def _choose_for_actor(spec: str, cuda_count: int, gpu_ids: list) -> str:
    if not gpu_ids:  # this actor asked Ray for no GPU
        return "cpu"
    if spec not in ("auto", "cuda"):
        raise ConfigError(f"device={spec!r} is not allowed: Ray assigned GPU(s) {gpu_ids} to this "
                          f"actor; with runtime=ray Ray assigns GPUs to actors: use device=auto or cuda")
    if cuda_count == 0:
        if os.environ.get(LOGICAL_GPUS_VARIABLE) == "1":  # a rehearsal's logical GPUs (module docstring)
            return "cpu"
        raise ConfigError(f"Ray assigned GPU(s) {gpu_ids} to this actor but torch sees no CUDA "
                          f"device (CUDA_VISIBLE_DEVICES, the driver or torch's CUDA build)")
    # Ray made exactly the assigned GPUs visible: the actor's first one has the first visible index
    return f"cuda:{FIRST_VISIBLE}"


def resolve_device(spec: str, gpu_ids: Optional[Sequence] = None) -> "torch.device":
    """``choose_device`` for this process: a torch.device, or a ConfigError naming what is there."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps is not None and mps.is_available())
    return torch.device(choose_device(spec, torch.cuda.device_count(), mps_available, gpu_ids))


def cpu_model() -> str:
    """This machine's CPU model name (from /proc/cpuinfo on Linux), else what the platform says:
    what benchmark results and rehearsal records name the machine by."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
