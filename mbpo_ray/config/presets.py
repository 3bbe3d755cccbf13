"""Per-env presets of the paper's released code, the generic preset of every other env,
per-algorithm presets, and the syntax of an env id.

docs/hyperparameters.md lists every value here with its source. Whether an env id names an env
that exists, and what its spaces are, needs gymnasium: ``mbpo_ray.envs`` checks that when the
env is made; this module checks only the form of the id.
"""
from __future__ import annotations

import re
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

# The paper's envs: a preset above and a known termination rule (mbpo_ray.envs holds their
# observation settings and rules). Any other env gets GENERIC_PRESET.
SUPPORTED_ENVS = tuple(PRESETS)

# Every env without a paper preset (docs/hyperparameters.md#the-generic-preset, each value's
# reason). init_random_steps null is filled in when the env is made (generic_init_random_steps).
GENERIC_PRESET: Dict[str, Any] = {
    "mbpo.epoch_length": 1000, "mbpo.rollout_schedule": (20, 150, 1, 1),
    "mbpo.updates_per_step": 20, "mbpo.model_train_freq": 250, "mbpo.model_retain_epochs": 1,
    "sac.target_entropy": None, "model.hidden_width": 200, "mbpo.init_random_steps": None,
    "mbpo.termination": "learned",
}

# The generic warm-up: this many episodes of the env's time limit, within the smallest and the
# largest warm-up of the paper presets (500 and 5000 steps).
WARMUP_EPISODES, WARMUP_MIN, WARMUP_MAX = 5, 500, 5000


def generic_init_random_steps(max_episode_steps: int) -> int:
    """The generic preset's uniform-random warm-up for an env whose episodes last at most
    ``max_episode_steps``: 5 episodes, at least 500 and at most 5000 steps."""
    return int(min(max(WARMUP_EPISODES * max_episode_steps, WARMUP_MIN), WARMUP_MAX))


def env_preset(env_id: str) -> Dict[str, Any]:
    """The env layer of a config: the paper preset of a paper env, else the generic one."""
    return PRESETS.get(env_id, GENERIC_PRESET)

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


# A custom env: "package.module:ClassOrFactory" (a Python attribute, no version suffix).
ENTRY_POINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
# gymnasium's id form: [module:][namespace/]name[-vN] ("module:" imports a module that
# registers the env; gymnasium's own id pattern allows these characters).
GYM_ID = re.compile(r"([A-Za-z_][\w.]*:)?([\w.-]+/)?[\w.-]+")

ENV_ID_HELP = (f"a registered gymnasium id with 1-D Box observations and actions (e.g. Pendulum-v1, "
               f"dm_control/cartpole-swingup-v0), a custom env as package.module:ClassOrFactory, or "
               f"one of the paper envs: {', '.join(SUPPORTED_ENVS)}")


def is_entry_point(env_id: str) -> bool:
    return ENTRY_POINT.fullmatch(env_id) is not None


def check_env_id(env_id: str) -> str:
    """``env_id`` if it has the form of an env id, else an UnknownEnvError saying what is
    allowed. Whether the env exists is checked when it is made (mbpo_ray.envs)."""
    if not isinstance(env_id, str):
        raise UnknownEnvError(f"env_id: expected a string, got {env_id!r}")
    if not (is_entry_point(env_id) or GYM_ID.fullmatch(env_id)):
        raise UnknownEnvError(f"env_id={env_id!r} is not allowed: expected {ENV_ID_HELP}")
    return env_id

