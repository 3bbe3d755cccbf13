"""Typed dataclass configs: the single source of truth for every run.

The CLI (``--set section.field=value``) and config files map onto these dataclasses. Every
per-env preset of the paper's released code (REFERENCE.md section 2) lives in ``PRESETS``.
``validate`` is called before anything runs or is written, and raises ``ConfigError`` naming
the field and what is allowed.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import yaml

from mbpo_ray.envs import SUPPORTED_ENVS, check_env_id
from mbpo_ray.errors import ConfigError

# mbpo: the paper's algorithm. sac: the same SAC with no model (real_ratio 1, G = 1; raise
# mbpo.updates_per_step for the paper's "no model, same G" ablation). pets, steve: the
# baselines of REFERENCE.md section 7. rllib-sac: RLlib's SAC as an external reference.
ALGOS = ("mbpo", "sac", "pets", "steve", "rllib-sac")
PROPAGATIONS = ("ts-inf", "ts-1", "expectation")
RUNTIMES = ("local", "ray")
SCHEDULES = ("sync", "async")


@dataclass
class ModelConfig:
    """Probabilistic ensemble and its trainer (REFERENCE.md section 3)."""

    num_members: int = 7
    num_elites: int = 5
    hidden_width: int = 200
    num_hidden_layers: int = 4
    learning_rate: float = 1e-3
    batch_size: int = 256
    # L2 decay per layer (4 hidden + output), weights only.
    weight_decays: Tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    holdout_ratio: float = 0.2
    max_holdout: int = 5000
    # Stop after this many epochs in which no member improved its holdout MSE by > threshold.
    early_stop_patience: int = 5
    improvement_threshold: float = 0.01
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_penalty: float = 0.01
    # Optional caps on one fit (the original code's max_model_t); off in the paper presets.
    max_fit_epochs: Optional[int] = None
    max_fit_seconds: Optional[float] = None


@dataclass
class SACConfig:
    hidden_width: int = 256
    num_hidden_layers: int = 2
    learning_rate: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_log_alpha: float = 0.0
    # None means -action_dim (the SAC default); the presets set the paper's values.
    target_entropy: Optional[float] = None
    replay_size: int = 1_000_000
    # torch.compile the update (worth it on a GPU; slow to warm up on a CPU).
    compile: bool = False


@dataclass
class MBPOConfig:
    epoch_length: int = 1000
    # [start_epoch, end_epoch, min_k, max_k]: k grows linearly from min_k to max_k.
    rollout_schedule: Tuple[int, int, int, int] = (20, 150, 1, 15)
    updates_per_step: int = 20  # G
    model_train_freq: int = 250
    # Start states per model-retrain period (400 per env step at period 250).
    rollout_batch_size: int = 100_000
    # Env steps between rollout batches; None means model_train_freq (the released code).
    rollout_freq: Optional[int] = None
    model_retain_epochs: int = 1
    real_ratio: float = 0.05
    init_random_steps: int = 5000
    # SAC updates start once D_env holds this many transitions (at least one batch).
    min_real_before_updates: int = 256


@dataclass
class PETSConfig:
    """CEM model-predictive control over the ensemble (Chua et al. 2018; REFERENCE.md section 7)."""

    horizon: int = 30
    population: int = 500
    num_elites: int = 50  # CEM elites (lowest cost plans), not model elites
    iterations: int = 5
    # new mean/variance = smoothing * old + (1 - smoothing) * elite statistics
    smoothing: float = 0.1
    # CEM stops early once the largest variance of the plan falls below this
    min_variance: float = 0.001
    num_particles: int = 20
    propagation: str = "ts-inf"  # one of PROPAGATIONS
    # Uniform-random episodes before the first planner episode.
    random_episodes: int = 1
    # Cost given to a plan whose predicted return is not finite.
    nan_cost: float = 1e6


@dataclass
class STEVEConfig:
    """STEVE's TD target on a SAC learner (Buckman et al. 2018; REFERENCE.md section 7)."""

    horizon: int = 3  # H: candidate targets T_0 .. T_H
    num_q: int = 4
    num_dynamics: int = 4
    num_reward: int = 4
    num_done: int = 4
    # The dynamics, reward and done ensembles (fit inside each update, with SiLU layers).
    model_hidden_width: int = 200
    model_num_hidden_layers: int = 3
    model_learning_rate: float = 1e-3


@dataclass
class RayConfig:
    """The Ray runtime (DESIGN.md section 2): one run as a group of actors."""

    # Ray cluster to join ("auto", "ray://host:10001", ...); None: RAY_ADDRESS if set, else
    # start Ray in-process on this machine.
    address: Optional[str] = None
    # sync: the paper's order and ratios, step for step; async: collection, model fitting,
    # rollouts and SAC updates overlap, with a rate limiter on updates per env step.
    schedule: str = "sync"
    num_collectors: int = 1
    num_rollout_workers: int = 2
    # Logical resources each actor asks Ray for. GPUs: the model trainer and the learner take
    # theirs from Ray's assignment; a run asking for more than the cluster has stops at once.
    collector_cpus: float = 1.0
    rollout_worker_cpus: float = 1.0
    rollout_worker_gpus: float = 0.0
    model_trainer_cpus: float = 1.0
    model_trainer_gpus: float = 0.0
    learner_cpus: float = 1.0
    learner_gpus: float = 0.0
    buffer_cpus: float = 0.0
    # A custom Ray resource that collectors and rollout workers require (e.g. one that only
    # worker nodes advertise), to keep them off the head node. None: anywhere.
    worker_node_resource: Optional[str] = None
    # In-process start only: object store size.
    object_store_mb: int = 512
    # Times the driver recreates a dead collector, rollout worker or model trainer.
    max_actor_restarts: int = 5
    # async: env steps per collector call, and the bounds of the rate limiter on SAC updates
    # per env step (None: mbpo.updates_per_step, i.e. the paper's G, as the upper bound; the
    # collectors wait when the learner falls below the lower bound).
    collector_chunk: int = 50
    learner_chunk: int = 100
    min_updates_per_step: Optional[float] = None
    max_updates_per_step: Optional[float] = None


@dataclass
class TrainConfig:
    env_id: str = "InvertedPendulum-v5"
    algo: str = "mbpo"
    seed: int = 0
    total_steps: int = 20_000
    # "auto" takes CUDA when there is one; otherwise "cpu", "cuda", "cuda:N" or "mps".
    device: str = "auto"
    # Intra-op CPU threads for torch; None keeps torch's default (all cores). Set 1 when
    # several runs share a machine.
    torch_threads: Optional[int] = None
    eval_episodes: int = 5
    checkpoint_every_epochs: int = 1
    # local: one process; ray: MBPO as a group of Ray actors (see RayConfig).
    runtime: str = "local"
    model: ModelConfig = field(default_factory=ModelConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)
    pets: PETSConfig = field(default_factory=PETSConfig)
    steve: STEVEConfig = field(default_factory=STEVEConfig)
    ray: RayConfig = field(default_factory=RayConfig)


# --- presets from the paper's released code (REFERENCE.md section 2) -------------------------

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
assert set(PRESETS) == set(SUPPORTED_ENVS)

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


# --- field access by dotted name --------------------------------------------------------------

def _fields(obj) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def field_names(cfg: TrainConfig) -> list[str]:
    names = []
    for name, f in _fields(cfg).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            names += [f"{name}.{sub}" for sub in _fields(value)]
        else:
            names.append(name)
    return names


def _resolve(cfg: TrainConfig, dotted: str):
    """Return (owner object, field name, type hint) for a dotted field name."""
    parts = dotted.split(".")
    owner = cfg
    for depth, part in enumerate(parts):
        fields = _fields(owner)
        if part not in fields:
            raise ConfigError(
                f"unknown config field {dotted!r}; allowed fields: {', '.join(field_names(cfg))}"
            )
        hint = typing.get_type_hints(type(owner))[part]
        value = getattr(owner, part)
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(value):
                raise ConfigError(f"{dotted!r} is a section; set one of its fields, "
                                  f"e.g. {dotted}.{next(iter(_fields(value)))}")
            return owner, part, hint
        if not dataclasses.is_dataclass(value):
            raise ConfigError(f"{'.'.join(parts[:depth + 1])!r} is not a section; "
                              f"allowed fields: {', '.join(field_names(cfg))}")
        owner = value
    raise AssertionError("unreachable")


def _coerce(dotted: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(dotted, value, inner)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(dotted, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{dotted}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(dotted, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {hint} for {dotted}")


def set_field(cfg: TrainConfig, dotted: str, value: Any) -> None:
    owner, name, hint = _resolve(cfg, dotted)
    setattr(owner, name, _coerce(dotted, value, hint))


def parse_override(text: str) -> Tuple[str, Any]:
    """Parse one ``field=value`` override; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot read value {raw!r}: {exc}") from None
    if isinstance(value, str) and raw.strip() != value:
        value = raw.strip()
    return key.strip(), _numbers_from_strings(value)


def _numbers_from_strings(value: Any) -> Any:
    """YAML 1.1 reads 3e-4 (no decimal point) as a string; read such strings as numbers."""
    if isinstance(value, list):
        return [_numbers_from_strings(v) for v in value]
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(cfg: TrainConfig, overrides: Dict[str, Any]) -> TrainConfig:
    for key, value in overrides.items():
        set_field(cfg, key, value)
    return cfg


def make_config(env_id: str, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The paper preset of ``env_id`` with ``overrides`` applied, validated."""
    check_env_id(env_id)
    overrides = dict(overrides or {})
    algo = overrides.get("algo", "mbpo")
    _require(algo in ALGOS, "algo", algo, f"one of {', '.join(ALGOS)}")
    cfg = TrainConfig(env_id=env_id)
    apply_overrides(cfg, PRESETS[env_id])
    apply_overrides(cfg, ALGO_PRESETS[algo])
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    out = {}
    for name in field_names(cfg):
        owner, leaf, _ = _resolve(cfg, name)
        out[name] = plain(getattr(owner, leaf))
    return out


def from_dict(flat: Dict[str, Any]) -> TrainConfig:
    cfg = TrainConfig()
    apply_overrides(cfg, flat)
    validate(cfg)
    return cfg


# --- validation -------------------------------------------------------------------------------

def _require(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}={value!r} is not allowed: {allowed}")


def validate(cfg: TrainConfig) -> None:
    check_env_id(cfg.env_id)
    _require(cfg.algo in ALGOS, "algo", cfg.algo, f"one of {', '.join(ALGOS)}")
    _require(cfg.seed >= 0, "seed", cfg.seed, "a non-negative integer")
    _require(cfg.total_steps > 0, "total_steps", cfg.total_steps, "a positive integer")
    dev = cfg.device
    _require(dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             "device", dev, "auto, cpu, cuda, cuda:N or mps")
    _require(cfg.torch_threads is None or cfg.torch_threads >= 1, "torch_threads", cfg.torch_threads,
             "null (torch's default) or at least 1")
    _require(cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes, "at least 1")
    _require(cfg.checkpoint_every_epochs >= 1, "checkpoint_every_epochs",
             cfg.checkpoint_every_epochs, "at least 1")

    m = cfg.model
    _require(m.num_members >= 1, "model.num_members", m.num_members, "at least 1")
    _require(1 <= m.num_elites <= m.num_members, "model.num_elites", m.num_elites,
             f"between 1 and model.num_members ({m.num_members})")
    _require(m.hidden_width >= 1, "model.hidden_width", m.hidden_width, "at least 1")
    _require(m.num_hidden_layers >= 1, "model.num_hidden_layers", m.num_hidden_layers, "at least 1")
    _require(m.learning_rate > 0, "model.learning_rate", m.learning_rate, "a positive number")
    _require(m.batch_size >= 1, "model.batch_size", m.batch_size, "at least 1")
    _require(len(m.weight_decays) == m.num_hidden_layers + 1, "model.weight_decays", m.weight_decays,
             f"one value per layer: model.num_hidden_layers + 1 = {m.num_hidden_layers + 1} values")
    _require(all(d >= 0 for d in m.weight_decays), "model.weight_decays", m.weight_decays,
             "non-negative values")
    _require(0 <= m.holdout_ratio < 1, "model.holdout_ratio", m.holdout_ratio, "within [0, 1)")
    _require(m.max_holdout >= 0, "model.max_holdout", m.max_holdout, "a non-negative integer")
    _require(m.early_stop_patience >= 1, "model.early_stop_patience", m.early_stop_patience, "at least 1")
    _require(m.improvement_threshold >= 0, "model.improvement_threshold", m.improvement_threshold,
             "a non-negative number")
    _require(m.init_min_logvar < m.init_max_logvar, "model.init_min_logvar", m.init_min_logvar,
             f"below model.init_max_logvar ({m.init_max_logvar})")
    _require(m.max_fit_epochs is None or m.max_fit_epochs >= 1, "model.max_fit_epochs",
             m.max_fit_epochs, "null (no cap) or at least 1")
    _require(m.max_fit_seconds is None or m.max_fit_seconds > 0, "model.max_fit_seconds",
             m.max_fit_seconds, "null (no cap) or a positive number")

    s = cfg.sac
    _require(s.hidden_width >= 1, "sac.hidden_width", s.hidden_width, "at least 1")
    _require(s.num_hidden_layers >= 1, "sac.num_hidden_layers", s.num_hidden_layers, "at least 1")
    _require(s.learning_rate > 0, "sac.learning_rate", s.learning_rate, "a positive number")
    _require(s.batch_size >= 1, "sac.batch_size", s.batch_size, "at least 1")
    _require(0 < s.discount <= 1, "sac.discount", s.discount, "within (0, 1]")
    _require(0 < s.tau <= 1, "sac.tau", s.tau, "within (0, 1]")
    _require(s.replay_size >= 1, "sac.replay_size", s.replay_size, "at least 1")

    b = cfg.mbpo
    _require(b.epoch_length >= 1, "mbpo.epoch_length", b.epoch_length, "at least 1")
    start, end, min_k, max_k = b.rollout_schedule
    _require(end > start >= 0, "mbpo.rollout_schedule", list(b.rollout_schedule),
             "[start_epoch, end_epoch, min_k, max_k] with 0 <= start_epoch < end_epoch")
    _require(1 <= min_k <= max_k, "mbpo.rollout_schedule", list(b.rollout_schedule),
             "[start_epoch, end_epoch, min_k, max_k] with 1 <= min_k <= max_k")
    _require(b.updates_per_step >= 0, "mbpo.updates_per_step", b.updates_per_step,
             "a non-negative integer")
    _require(b.model_train_freq >= 1, "mbpo.model_train_freq", b.model_train_freq, "at least 1")
    _require(b.rollout_batch_size >= 1, "mbpo.rollout_batch_size", b.rollout_batch_size, "at least 1")
    _require(b.rollout_freq is None or b.rollout_freq >= 1, "mbpo.rollout_freq", b.rollout_freq,
             "null (= mbpo.model_train_freq) or at least 1")
    _require(b.model_retain_epochs >= 1, "mbpo.model_retain_epochs", b.model_retain_epochs, "at least 1")
    _require(0 <= b.real_ratio <= 1, "mbpo.real_ratio", b.real_ratio, "within [0, 1]")
    _require(b.init_random_steps >= 0, "mbpo.init_random_steps", b.init_random_steps,
             "a non-negative integer")
    _require(b.min_real_before_updates >= 1, "mbpo.min_real_before_updates",
             b.min_real_before_updates, "at least 1")


    _require(cfg.runtime in RUNTIMES, "runtime", cfg.runtime, f"one of {', '.join(RUNTIMES)}")
    _require(cfg.runtime == "local" or cfg.algo in ("mbpo", "sac"), "runtime", cfg.runtime,
             f"local for algo={cfg.algo} (the ray runtime runs mbpo and sac)")
    r = cfg.ray
    _require(r.schedule in SCHEDULES, "ray.schedule", r.schedule, f"one of {', '.join(SCHEDULES)}")
    _require(r.num_collectors >= 1, "ray.num_collectors", r.num_collectors, "at least 1")
    _require(r.num_rollout_workers >= 1, "ray.num_rollout_workers", r.num_rollout_workers, "at least 1")
    for name in ("collector_cpus", "rollout_worker_cpus", "rollout_worker_gpus", "model_trainer_cpus",
                 "model_trainer_gpus", "learner_cpus", "learner_gpus", "buffer_cpus"):
        _require(getattr(r, name) >= 0, f"ray.{name}", getattr(r, name), "a non-negative number")
    _require(r.object_store_mb >= 64, "ray.object_store_mb", r.object_store_mb, "at least 64")
    _require(r.max_actor_restarts >= 0, "ray.max_actor_restarts", r.max_actor_restarts,
             "a non-negative integer")
    _require(r.collector_chunk >= 1 and b.epoch_length % r.collector_chunk == 0, "ray.collector_chunk",
             r.collector_chunk, f"a divisor of mbpo.epoch_length ({b.epoch_length})")
    _require(r.learner_chunk >= 1, "ray.learner_chunk", r.learner_chunk, "at least 1")
    low = r.min_updates_per_step
    high = b.updates_per_step if r.max_updates_per_step is None else r.max_updates_per_step
    _require(high >= 0, "ray.max_updates_per_step", r.max_updates_per_step, "null or non-negative")
    _require(low is None or 0 <= low <= high, "ray.min_updates_per_step", low,
             f"null or within [0, max updates per step = {high}]")

    p = cfg.pets
    _require(p.horizon >= 1, "pets.horizon", p.horizon, "at least 1")
    _require(p.population >= 2, "pets.population", p.population, "at least 2")
    _require(1 <= p.num_elites <= p.population, "pets.num_elites", p.num_elites,
             f"between 1 and pets.population ({p.population})")
    _require(p.iterations >= 1, "pets.iterations", p.iterations, "at least 1")
    _require(0 <= p.smoothing < 1, "pets.smoothing", p.smoothing, "within [0, 1)")
    _require(p.min_variance >= 0, "pets.min_variance", p.min_variance, "a non-negative number")
    _require(p.num_particles >= 1, "pets.num_particles", p.num_particles, "at least 1")
    _require(p.propagation in PROPAGATIONS, "pets.propagation", p.propagation,
             f"one of {', '.join(PROPAGATIONS)}")
    _require(p.random_episodes >= 1, "pets.random_episodes", p.random_episodes, "at least 1")
    _require(p.nan_cost > 0, "pets.nan_cost", p.nan_cost, "a positive number")

    v = cfg.steve
    _require(v.horizon >= 0, "steve.horizon", v.horizon, "a non-negative integer")
    for name in ("num_q", "num_dynamics", "num_reward", "num_done"):
        _require(getattr(v, name) >= 1, f"steve.{name}", getattr(v, name), "at least 1")
    _require(v.model_hidden_width >= 1, "steve.model_hidden_width", v.model_hidden_width, "at least 1")
    _require(v.model_num_hidden_layers >= 1, "steve.model_num_hidden_layers",
             v.model_num_hidden_layers, "at least 1")
    _require(v.model_learning_rate > 0, "steve.model_learning_rate", v.model_learning_rate,
             "a positive number")
    # STEVE learns from real transitions only (its models expand the TD target instead).
    _require(cfg.algo != "steve" or b.real_ratio == 1.0, "mbpo.real_ratio", b.real_ratio,
             "1 with algo steve (STEVE has no model buffer)")


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} is not allowed: this machine has no CUDA device; "
                          f"use device=cpu or device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} is not allowed: MPS is not available here; use cpu")
    return device
