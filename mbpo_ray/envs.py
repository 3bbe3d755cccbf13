"""Gymnasium env construction, the paper's observation truncation, and termination functions.

A termination function maps a batch of (obs, action, next_obs) tensors to a boolean tensor
``terminated`` of shape [batch]. They are applied to *predicted* next states during model
rollouts (docs/termination.md) and are tested against the real env's ``terminated`` flag.
Time-limit truncation is never part of them: it is not a property of the state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np
import torch

from mbpo_ray.config.presets import SUPPORTED_ENVS, check_env_id as check_supported_env
from mbpo_ray.errors import UnknownEnvError  # noqa: F401 (raised by check_env_id)
from mbpo_ray.models.model_env import TerminationFn


def _all_finite(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).all(dim=-1)


def hopper_termination(obs, act, next_obs):
    # The released code wraps a boolean in abs() by mistake; this is the intended rule.
    height, angle = next_obs[:, 0], next_obs[:, 1]
    alive = (
        _all_finite(next_obs)
        & (next_obs[:, 1:].abs() < 100).all(dim=-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~alive


def walker2d_termination(obs, act, next_obs):
    height, angle = next_obs[:, 0], next_obs[:, 1]
    alive = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~alive


def halfcheetah_termination(obs, act, next_obs):
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


def ant_termination(obs, act, next_obs):
    height = next_obs[:, 0]
    alive = _all_finite(next_obs) & (height >= 0.2) & (height <= 1.0)
    return ~alive


def humanoid_termination(obs, act, next_obs):
    height = next_obs[:, 0]
    return (height < 1.0) | (height > 2.0)


def inverted_pendulum_termination(obs, act, next_obs):
    alive = _all_finite(next_obs) & (next_obs[:, 1].abs() <= 0.2)
    return ~alive


def inverted_double_pendulum_termination(obs, act, next_obs):
    # v5 observation: [cart x, sin t1, sin t2, cos t1, cos t2, velocities..., constraint force].
    # Tip height y = 0.6 (cos t1 + cos(t1 + t2)); the episode ends when y <= 1.
    sin1, sin2, cos1, cos2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    y = 0.6 * (cos1 + (cos1 * cos2 - sin1 * sin2))
    return y <= 1.0


@dataclass(frozen=True)
class EnvSpec:
    termination: TerminationFn
    make_kwargs: Dict[str, Any] = field(default_factory=dict)


# Ant and Humanoid observe only qpos[2:] and qvel, as in the paper (docs/observations.md).
_TRUNCATED_ANT = dict(include_cfrc_ext_in_observation=False)
_TRUNCATED_HUMANOID = dict(
    include_cinert_in_observation=False,
    include_cvel_in_observation=False,
    include_qfrc_actuator_in_observation=False,
    include_cfrc_ext_in_observation=False,
)

ENV_SPECS: Dict[str, EnvSpec] = {
    "Hopper-v5": EnvSpec(hopper_termination),
    "Walker2d-v5": EnvSpec(walker2d_termination),
    "HalfCheetah-v5": EnvSpec(halfcheetah_termination),
    "Ant-v5": EnvSpec(ant_termination, _TRUNCATED_ANT),
    "Humanoid-v5": EnvSpec(humanoid_termination, _TRUNCATED_HUMANOID),
    "InvertedPendulum-v5": EnvSpec(inverted_pendulum_termination),
    "InvertedDoublePendulum-v5": EnvSpec(inverted_double_pendulum_termination),
}
assert tuple(ENV_SPECS) == SUPPORTED_ENVS  # the env ids come from mbpo_ray.config.presets


def check_env_id(env_id: str) -> EnvSpec:
    """The spec of a supported env; UnknownEnvError (a ConfigError) listing them otherwise."""
    return ENV_SPECS[check_supported_env(env_id)]


def make_env(env_id: str, seed: int | None = None) -> gym.Env:
    spec = check_env_id(env_id)
    env = gym.make(env_id, **spec.make_kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def termination_fn(env_id: str) -> TerminationFn:
    return check_env_id(env_id).termination


# --- exact env state, for checkpoints that resume mid-episode ---------------------------------

def _time_limit(env: gym.Env):
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            return wrapper
        wrapper = wrapper.env
    return None


def get_env_state(env: gym.Env) -> Dict[str, Any]:
    """Everything needed to continue an episode bit-for-bit: MuJoCo integration state
    (positions, velocities, warm start, time), the env's RNG, and the time-limit counter."""
    import mujoco

    base = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
    mujoco.mj_getState(base.model, base.data, physics, spec)
    limit = _time_limit(env)
    return {
        "physics": physics,
        "np_random": base.np_random.bit_generator.state,
        "elapsed_steps": None if limit is None else limit._elapsed_steps,
        # Ant and Humanoid read body positions left over from the last substep to compute
        # their forward velocity; mj_forward on restore would recompute them, so keep them.
        "xpos": base.data.xpos.copy(),
        "xipos": base.data.xipos.copy(),
    }


def set_env_state(env: gym.Env, state: Dict[str, Any]) -> None:
    import mujoco

    base = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(base.model, base.data, np.asarray(state["physics"], dtype=np.float64), spec)
    mujoco.mj_forward(base.model, base.data)
    base.data.xpos[:] = state["xpos"]
    base.data.xipos[:] = state["xipos"]
    base.np_random.bit_generator.state = state["np_random"]
    limit = _time_limit(env)
    if limit is not None and state["elapsed_steps"] is not None:
        limit._elapsed_steps = state["elapsed_steps"]


# --- the training env of a run: actions in [-1, 1], episode bookkeeping ------------------------

class ActionScaler:
    """Policies act in [-1, 1]; envs get actions in their own box."""

    def __init__(self, space):
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return self.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)


@dataclass
class EnvStep:
    """One real transition; ``finished`` is (return, length) of the episode it ended, if any.
    Time-limit truncation ends an episode but is not terminal: only ``terminated`` is stored."""

    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    finished: Optional[Tuple[float, int]] = None


class TrainingEnv:
    """The env a run collects its data in: seeded once, stepped with actions in [-1, 1],
    reset at each episode end, with the running episode's return and length and the generator
    of uniform random actions. Its state continues an episode bit for bit."""

    def __init__(self, env_id: str, seed: int):
        self.env = make_env(env_id, seed=seed)
        self.obs_dim = self.env.observation_space.shape[0]
        self.act_dim = self.env.action_space.shape[0]
        self.scaler = ActionScaler(self.env.action_space)
        self.action_rng = np.random.default_rng(seed)
        self.obs, _ = self.env.reset(seed=seed)
        self.episode_return, self.episode_length = 0.0, 0

    def random_action(self) -> np.ndarray:
        return self.action_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)

    def step(self, action: np.ndarray) -> EnvStep:
        next_obs, reward, terminated, truncated, _ = self.env.step(self.scaler.to_env(action))
        out = EnvStep(self.obs, action, float(reward), next_obs, bool(terminated))
        self.episode_return += float(reward)
        self.episode_length += 1
        self.obs = next_obs
        if terminated or truncated:
            out.finished = (self.episode_return, self.episode_length)
            self.obs, _ = self.env.reset()
            self.episode_return, self.episode_length = 0.0, 0
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {"env": get_env_state(self.env), "obs": np.array(self.obs),
                "episode": (self.episode_return, self.episode_length),
                "action_rng": self.action_rng.bit_generator.state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        set_env_state(self.env, state["env"])
        self.obs = state["obs"]
        self.episode_return, self.episode_length = state["episode"]
        self.action_rng.bit_generator.state = state["action_rng"]
