"""Gymnasium env construction, the paper's observation truncation, and termination functions.

Any env with 1-D Box observations and a 1-D Box action space with finite bounds runs: a
registered gymnasium id, or a custom env given as ``package.module:ClassOrFactory``
(``make_env``). ``prepare_config`` makes the env of a config once before anything is written:
it refuses an env that does not exist or has unsupported spaces, fills in the generic preset's
env-dependent values and checks a user's termination function on a batch.

A termination function maps a batch of (obs, action, next_obs) tensors to a boolean tensor
``terminated`` of shape [batch]. They are applied to *predicted* next states during model
rollouts (docs/termination.md); the paper envs' rules are tested against the real env's
``terminated`` flag. Time-limit truncation is never part of them: it is not a property of the
state. ``make_termination`` gives a run's rule from ``mbpo.termination``.
"""
from __future__ import annotations

import copy
import importlib
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np
import torch

from mbpo_ray.config import TrainConfig, generic_init_random_steps, is_entry_point
from mbpo_ray.config.presets import ENV_ID_HELP, SUPPORTED_ENVS
from mbpo_ray.errors import ConfigError, UnknownEnvError
from mbpo_ray.models.model_env import TerminationFn
from mbpo_ray.models.termination import LearnedTermination


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


def never_terminates(obs, act, next_obs):
    """``mbpo.termination: none``, and HalfCheetah's rule."""
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


def halfcheetah_termination(obs, act, next_obs):
    return never_terminates(obs, act, next_obs)


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
    """The spec of a paper env (its known termination rule and make kwargs); an UnknownEnvError
    (a ConfigError) listing the paper envs otherwise."""
    if env_id not in ENV_SPECS:
        raise UnknownEnvError(f"env_id={env_id!r} has no known termination rule: the known rules are "
                              f"those of the paper envs ({', '.join(SUPPORTED_ENVS)}); for another env "
                              f"use mbpo.termination=learned, none or package.module:function")
    return ENV_SPECS[env_id]


def termination_fn(env_id: str) -> TerminationFn:
    """The known rule of a paper env (docs/termination.md)."""
    return check_env_id(env_id).termination


# --- making any env ------------------------------------------------------------------------------

SUPPORTED_SPACES = ("mbpo-ray supports a 1-D Box observation space (a vector of numbers) and a 1-D "
                    "Box action space with finite bounds")


def load_object(path: str, what: str, error: type = ConfigError) -> Any:
    """The attribute named by ``package.module:name``; an ``error`` naming ``what`` otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{what}={path!r}: cannot import module {module_name!r} ({exc}); "
                    f"expected package.module:name of an importable module") from None
    if not hasattr(module, attr):
        raise error(f"{what}={path!r}: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise ConfigError(f"{what}={path!r} is not callable (a class or function is expected)")
    return obj


def _check_spaces(env_id: str, env: gym.Env) -> None:
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Box):
        raise ConfigError(f"env_id={env_id!r}: observation space {obs} is not supported; {SUPPORTED_SPACES}")
    if len(obs.shape) != 1:
        kind = "image observations are" if len(obs.shape) >= 2 else "a scalar observation is"
        raise ConfigError(f"env_id={env_id!r}: observation space {obs} of shape {obs.shape}: {kind} not "
                          f"supported; {SUPPORTED_SPACES} (flatten the observation in a wrapper)")
    if not isinstance(act, gym.spaces.Box):
        raise ConfigError(f"env_id={env_id!r}: action space {act} is not supported (discrete actions are "
                          f"not); {SUPPORTED_SPACES}")
    if len(act.shape) != 1:
        raise ConfigError(f"env_id={env_id!r}: action space {act} of shape {act.shape} is not supported; "
                          f"{SUPPORTED_SPACES}")
    if not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
        raise ConfigError(f"env_id={env_id!r}: action space {act} has infinite bounds; {SUPPORTED_SPACES} "
                          f"(the policy's actions in [-1, 1] are scaled to the bounds)")


def _gym_make(env_id: str, kwargs: Dict[str, Any]) -> gym.Env:
    target: Any = env_id
    if is_entry_point(env_id):
        factory = load_object(env_id, "env_id", UnknownEnvError)
        # gymnasium.make on an unregistered spec: the same wrappers as a registered env
        # (the env checker, order enforcing, and a TimeLimit when max_episode_steps is given).
        target = gym.envs.registration.EnvSpec(id=env_id.rpartition(":")[2], entry_point=factory)
    try:
        return gym.make(target, **kwargs)
    except (gym.error.NameNotFound, gym.error.VersionNotFound, gym.error.NamespaceNotFound,
            gym.error.UnregisteredEnv) as exc:
        raise UnknownEnvError(f"env_id={env_id!r} is not allowed: {exc} Expected {ENV_ID_HELP}") from None
    except gym.error.DependencyNotInstalled as exc:
        raise ConfigError(f"env_id={env_id!r} needs a package that is not installed: {exc}") from None
    except gym.error.Error as exc:
        raise UnknownEnvError(f"env_id={env_id!r} is not allowed: {exc} Expected {ENV_ID_HELP}") from None
    except TypeError as exc:
        if "must inherit from the gymnasium.Env" in str(exc):
            raise ConfigError(f"env_id={env_id!r} did not make a gymnasium.Env: {exc}") from None
        raise ConfigError(f"env_kwargs={kwargs!r} is not allowed for env_id={env_id!r}: {exc}") from None
    except Exception as exc:  # anything the env's constructor raises: one line, not a traceback
        raise ConfigError(f"env_id={env_id!r} could not be made (env_kwargs={kwargs!r}): "
                          f"{type(exc).__name__}: {exc}") from None


def make_env(env_id: str, seed: int | None = None, kwargs: Optional[Dict[str, Any]] = None) -> gym.Env:
    """The env ``env_id`` (a paper env with its observation settings, any registered gymnasium
    id, or ``package.module:ClassOrFactory``) made with ``kwargs`` (gymnasium.make's keyword
    arguments, e.g. ``max_episode_steps``, and the env's own); reset with ``seed``. A ConfigError
    (UnknownEnvError for an env that does not exist) says what is wrong: unknown id, bad kwargs,
    or spaces mbpo-ray does not support."""
    paper = ENV_SPECS.get(env_id)
    make_kwargs = {**(paper.make_kwargs if paper else {}), **(kwargs or {})}
    env = _gym_make(env_id, make_kwargs)
    try:
        _check_spaces(env_id, env)
    except ConfigError:
        env.close()
        raise
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def episode_limit(env: gym.Env) -> Optional[int]:
    """The env's time limit in steps (its TimeLimit wrapper's), or None."""
    limit = _time_limit(env)
    return None if limit is None else int(limit._max_episode_steps)


@dataclass(frozen=True)
class EnvInfo:
    """What ``prepare_config`` learnt from making the env once."""

    obs_dim: int
    act_dim: int
    max_episode_steps: int


def _random_batch(env: gym.Env, n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` real transitions of uniform random actions (float32 tensors), restarting episodes."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        action = rng.uniform(space.low, space.high).astype(space.dtype)
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs))
        obs = env.reset()[0] if terminated or truncated else next_obs
    return tuple(torch.as_tensor(np.stack([r[i] for r in rows]), dtype=torch.float32) for i in range(3))


TERMINATION_CHECK_BATCH = 16


def check_termination_function(fn: Callable, name: str, env: gym.Env, seed: int) -> None:
    """A user's termination function, called on a batch of real transitions, must return a bool
    tensor of shape [batch]; a ConfigError naming ``mbpo.termination`` otherwise."""
    n = TERMINATION_CHECK_BATCH
    obs, act, next_obs = _random_batch(env, n, seed)
    try:
        out = fn(obs, act, next_obs)
    except Exception as exc:
        raise ConfigError(f"mbpo.termination={name!r} failed on a batch of {n} transitions: "
                          f"{type(exc).__name__}: {exc}") from None
    got = (f"a tensor of shape {tuple(out.shape)} and dtype {out.dtype}" if isinstance(out, torch.Tensor)
           else f"a {type(out).__name__}")
    if not (isinstance(out, torch.Tensor) and out.dtype == torch.bool and tuple(out.shape) == (n,)):
        raise ConfigError(f"mbpo.termination={name!r} returned {got} on a batch of {n} transitions "
                          f"(obs [{n}, {obs.shape[1]}], act [{n}, {act.shape[1]}], next_obs "
                          f"[{n}, {obs.shape[1]}]); it must return a torch.bool tensor of shape [{n}]")


def prepare_config(cfg: TrainConfig) -> Tuple[TrainConfig, EnvInfo]:
    """Make ``cfg``'s env once, before anything is written: a ConfigError if it does not exist,
    refuses ``env_kwargs`` or has unsupported spaces, or if it has no time limit; a user's
    termination function is checked on a batch of its transitions. Returns a copy of ``cfg``
    with the values the generic preset leaves to the env filled in
    (``mbpo.init_random_steps``: docs/hyperparameters.md#the-generic-preset), and what was
    learnt of the env."""
    env = make_env(cfg.env_id, seed=cfg.seed, kwargs=cfg.env_kwargs)
    try:
        limit = episode_limit(env)
        if limit is None:
            raise ConfigError(f"env_id={cfg.env_id!r} has no time limit: evaluation episodes must end and "
                              f"the generic warm-up is counted in episodes; set one with env_kwargs "
                              f"max_episode_steps (e.g. --env-kwargs max_episode_steps=1000)")
        info = EnvInfo(env.observation_space.shape[0], env.action_space.shape[0], limit)
        rule = cfg.mbpo.termination
        if is_entry_point(rule):
            check_termination_function(load_object(rule, "mbpo.termination"), rule, env, cfg.seed)
    finally:
        env.close()
    resolved = copy.deepcopy(cfg)
    if resolved.mbpo.init_random_steps is None:
        resolved.mbpo.init_random_steps = generic_init_random_steps(limit)
    return resolved, info


def make_termination(cfg: TrainConfig, obs_dim: int, device=None) -> TerminationFn:
    """The termination rule of a run's model rollouts, by ``mbpo.termination``
    (docs/termination.md): the paper env's known rule, never, a user's function, or a
    ``LearnedTermination`` (which the caller fits with the ensemble)."""
    rule = cfg.mbpo.termination
    if rule == "known":
        return termination_fn(cfg.env_id)
    if rule == "none":
        return never_terminates
    if rule == "learned":
        return LearnedTermination(obs_dim, cfg.model, device)
    return load_object(rule, "mbpo.termination")


# --- exact env state, for checkpoints that resume mid-episode ---------------------------------

def _time_limit(env: gym.Env):
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            return wrapper
        wrapper = wrapper.env
    return None


def _is_mujoco(base) -> bool:
    import mujoco

    return isinstance(getattr(base, "data", None), mujoco.MjData) and \
        isinstance(getattr(base, "model", None), mujoco.MjModel)


def get_env_state(env: gym.Env) -> Dict[str, Any]:
    """Everything needed to continue an episode bit-for-bit: for a MuJoCo env, MuJoCo's
    integration state (positions, velocities, warm start, time), the env's RNG, and the
    time-limit counter; for any other env, the pickled env itself (its attributes: state, RNG)
    and the time-limit counter, or ``None`` in its place when the env cannot be pickled
    (docs/resume.md: such a run resumes with a new episode)."""
    import mujoco

    base = env.unwrapped
    limit = _time_limit(env)
    if not _is_mujoco(base):
        try:
            pickled = pickle.dumps(base)
        except Exception:  # e.g. an env holding a simulator handle
            pickled = None
        return {"pickled_env": pickled, "elapsed_steps": None if limit is None else limit._elapsed_steps}
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
    mujoco.mj_getState(base.model, base.data, physics, spec)
    return {
        "physics": physics,
        "np_random": base.np_random.bit_generator.state,
        "elapsed_steps": None if limit is None else limit._elapsed_steps,
        # Ant and Humanoid read body positions left over from the last substep to compute
        # their forward velocity; mj_forward on restore would recompute them, so keep them.
        "xpos": base.data.xpos.copy(),
        "xipos": base.data.xipos.copy(),
    }


def set_env_state(env: gym.Env, state: Dict[str, Any]) -> bool:
    """Restore ``get_env_state``'s snapshot; False when it holds no env state to restore (an env
    that could not be pickled), True otherwise."""
    import mujoco

    base = env.unwrapped
    limit = _time_limit(env)
    if "physics" not in state:
        if state.get("pickled_env") is None:
            return False
        base.__dict__.update(pickle.loads(state["pickled_env"]).__dict__)
        if limit is not None and state["elapsed_steps"] is not None:
            limit._elapsed_steps = state["elapsed_steps"]
        return True
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(base.model, base.data, np.asarray(state["physics"], dtype=np.float64), spec)
    mujoco.mj_forward(base.model, base.data)
    base.data.xpos[:] = state["xpos"]
    base.data.xipos[:] = state["xipos"]
    base.np_random.bit_generator.state = state["np_random"]
    if limit is not None and state["elapsed_steps"] is not None:
        limit._elapsed_steps = state["elapsed_steps"]
    return True


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

    def __init__(self, env_id: str, seed: int, env_kwargs: Optional[Dict[str, Any]] = None):
        self.env_id = env_id
        self.env = make_env(env_id, seed=seed, kwargs=env_kwargs)
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
        self.action_rng.bit_generator.state = state["action_rng"]
        if set_env_state(self.env, state["env"]):
            self.obs = state["obs"]
            self.episode_return, self.episode_length = state["episode"]
            return
        # docs/resume.md: an env that cannot be pickled is not restored; a new episode starts.
        print(f"mbpo-ray: {self.env_id} could not be saved in the checkpoint (it cannot be pickled): "
              f"the resumed run starts a new episode", file=sys.stderr)
        self.obs, _ = self.env.reset()
        self.episode_return, self.episode_length = 0.0, 0
