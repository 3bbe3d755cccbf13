"""Algorithms, by the name ``TrainConfig.algo`` gives them (see ``mbpo_ray.config.ALGOS``)."""
from __future__ import annotations

import importlib
from pathlib import Path

from mbpo_ray.algos.base import Algorithm

# name -> "module:class"; imported on demand (RLlib is slow to import and only rllib-sac needs it)
_CLASSES = {
    "mbpo": "mbpo_ray.algos.mbpo:MBPO",
    "sac": "mbpo_ray.algos.mbpo:MBPO",
    "pets": "mbpo_ray.algos.pets:PETS",
    "steve": "mbpo_ray.algos.steve:STEVE",
    "rllib-sac": "mbpo_ray.algos.rllib_sac:RLlibSAC",
}


def make_algorithm(cfg, device, run_path: Path) -> Algorithm:
    """Build ``cfg.algo`` for a run whose directory is ``run_path`` (for algorithms that keep
    files of their own there, such as RLlib's checkpoints)."""
    module, name = _CLASSES[cfg.algo].split(":")
    return getattr(importlib.import_module(module), name)(cfg, device, Path(run_path))
