"""Per-env presets of the paper's released code, per-algorithm presets, and the supported envs.

docs/hyperparameters.md lists every value here with its source.
"""
from __future__ import annotations

from typing import Any, Dict

from mbpo_ray.config.schema import ALGOS
from mbpo_ray.errors import UnknownEnvError

PRESETS: Dict[str, Dict[str, Any]] = {
    "Hopper-v5": {
        "total_steps": 125_000, "sac.target_entropy": -1.0,
        "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 150, 1, 15),
        "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 5000,
    },
    "Walker2d-v5": {
        "total_steps": 300_000, "sac.target_entropy": -3.0,
        "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 150, 1, 1),
        "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 5000,
    },
    "HalfCheetah-v5": {
        "total_steps": 400_000, "sac.target_entropy": -3.0,
        "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 150, 1, 1),
        "mbpo.updates_per_step": 40, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 5000,
    },
    "Ant-v5": {
        "total_steps": 300_000, "sac.target_entropy": -4.0,
        "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 100, 1, 25),
        "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 5000,
    },
    "Humanoid-v5": {
        "total_steps": 300_000, "sac.target_entropy": -2.0,
        "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 300, 1, 25),
        "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 1000, "mbpo.model_retain_epochs": 5,
        "model.hidden_width": 400, "mbpo.init_random_steps": 5000,
    },
    "InvertedPendulum-v5": {
        "total_steps": 20_000, "sac.target_entropy": -0.05,
        "mbpo.epoch_length": 250, "mbpo.rollout_schedule": (1, 15, 1, 1),
        "mbpo.updates_per_step": 10, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 500,
    },
    "InvertedDoublePendulum-v5": {
        "total_steps": 20_000, "sac.target_entropy": -0.5,
        "mbpo.epoch_length": 250, "mbpo.rollout_schedule": (1, 15, 1, 1),
        "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
        "model.hidden_width": 200, "mbpo.init_random_steps": 500,
    },
}

# The env ids mbpo-ray runs; mbpo_ray.envs holds their observation settings and termination rules.
SUPPORTED_ENVS = tuple(PRESETS)

# Applied after the env preset and before the user's overrides. The loop fields of the mbpo
# section (epoch_length, init_random_steps, updates_per_step, real_ratio) drive every
# SAC-based algorithm, so "sac" is MBPO with no model data and one update per env step.
ALGO_PRESETS: Dict[str, Dict[str, Any]] = {
    "mbpo": {},
    "sac": {"mbpo.real_ratio": 1.0, "mbpo.updates_per_step": 1},
    # PETS: an ensemble of 5 probabilistic networks, all of them used by the planner.
    # Batch 32: the PETS code's ensemble training batch; 256 leaves a single gradient step
    # per epoch on the few hundred transitions of the first episodes.
    "pets": {"model.num_members": 5, "model.num_elites": 5, "model.batch_size": 32},
    "steve": {"mbpo.real_ratio": 1.0, "mbpo.updates_per_step": 1},
    "rllib-sac": {"mbpo.real_ratio": 1.0, "mbpo.updates_per_step": 1},
}
assert set(ALGO_PRESETS) == set(ALGOS)


def check_env_id(env_id: str) -> str:
    """``env_id`` if mbpo-ray supports it, else an UnknownEnvError listing the supported ids."""
    if env_id not in SUPPORTED_ENVS:
        raise UnknownEnvError(f"env_id={env_id!r} is not allowed: unknown env id; "
                              f"supported: {', '.join(SUPPORTED_ENVS)}")
    return env_id
