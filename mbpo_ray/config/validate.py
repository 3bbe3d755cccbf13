"""``validate(cfg)``: called before anything runs or is written; a ConfigError names the field
and what is allowed."""
from __future__ import annotations

import re
from typing import Any

from mbpo_ray.config.presets import ENTRY_POINT, SUPPORTED_ENVS, check_env_id
from mbpo_ray.config.schema import (ALGOS, PRECISIONS, PROPAGATIONS, ROLLOUT_UNCERTAINTIES, RUNTIMES, SCHEDULES,
                                    TERMINATIONS, MBPOConfig,
                                    ModelConfig, PETSConfig, SACConfig, TrainConfig)
from mbpo_ray.errors import ConfigError

# np.random.seed takes seeds in [0, 2**32); torch.manual_seed takes more.
SEED_LIMIT = 2**32
RAY_GPU_FIELDS = ("rollout_worker_gpus", "model_trainer_gpus", "learner_gpus")
LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def require(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}={value!r} is not allowed: {allowed}")


def validate(cfg: TrainConfig) -> None:
    _check_run(cfg)
    _check_env_kwargs(cfg.env_kwargs)
    _check_termination(cfg)
    _check_model(cfg.model)
    _check_sac(cfg.sac)
    _check_mbpo(cfg.mbpo)
    _check_warmup(cfg)
    _check_ray(cfg)
    _check_pets(cfg.pets)
    _check_steve(cfg)
    _check_mbpo_plus(cfg)


def _check_run(cfg: TrainConfig) -> None:
    check_env_id(cfg.env_id)
    require(cfg.algo in ALGOS, "algo", cfg.algo, f"one of {', '.join(ALGOS)}")
    require(cfg.label is None or (isinstance(cfg.label, str) and LABEL.fullmatch(cfg.label) is not None),
            "label", cfg.label, "null or a name of letters, digits, '_', '.' and '-'")
    require(0 <= cfg.seed < SEED_LIMIT, "seed", cfg.seed,
            f"a non-negative integer below 2**32 = {SEED_LIMIT} (the seeds numpy accepts)")
    require(cfg.total_steps > 0, "total_steps", cfg.total_steps, "a positive integer")
    dev = cfg.device
    require(dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit()),
            "device", dev, "auto, cpu, cuda, cuda:N or mps")
    require(cfg.algo != "rllib-sac" or dev != "mps", "device", dev,
            "auto, cpu, cuda or cuda:N with algo rllib-sac (RLlib's torch learner runs on CPU or CUDA)")
    require(cfg.precision in PRECISIONS, "precision", cfg.precision, f"one of {', '.join(PRECISIONS)}")
    require(cfg.precision == "float32" or cfg.algo in ("mbpo", "sac", "steve"), "precision", cfg.precision,
            f"float32 with algo {cfg.algo} (bf16 covers the SAC update, the ensemble's fit and the model "
            f"rollouts of mbpo, sac and steve)")
    require(not cfg.sac.cuda_graph or cfg.algo in ("mbpo", "sac"), "sac.cuda_graph", cfg.sac.cuda_graph,
            f"false with algo {cfg.algo} (the graphed update is SAC's, whose random draws come before "
            f"the update: mbpo and sac)")
    require(cfg.torch_threads is None or cfg.torch_threads >= 1, "torch_threads", cfg.torch_threads,
            "null (torch's default) or at least 1")
    require(cfg.eval_episodes >= 1, "eval_episodes", cfg.eval_episodes, "at least 1")
    require(cfg.checkpoint_every_epochs >= 1, "checkpoint_every_epochs",
            cfg.checkpoint_every_epochs, "at least 1")
    require(cfg.video_every_epochs >= 0 and cfg.video_every_epochs % cfg.checkpoint_every_epochs == 0,
            "video_every_epochs", cfg.video_every_epochs,
            f"0 (no videos) or a multiple of checkpoint_every_epochs ({cfg.checkpoint_every_epochs}): a video is "
            f"made from the checkpoint of its epoch")
    require(cfg.keep_checkpoints_every >= 0, "keep_checkpoints_every", cfg.keep_checkpoints_every,
            "0 (keep none) or a positive number of epochs")
    require(cfg.keep_checkpoints_every == 0 or cfg.algo == "mbpo", "keep_checkpoints_every",
            cfg.keep_checkpoints_every, f"0 with algo {cfg.algo} (the copies hold an mbpo run's policy and "
            f"dynamics ensemble)")


def _plain(value: Any) -> bool:
    """A value config.yaml can hold and read back as it was: YAML scalars, lists, mappings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _check_env_kwargs(kwargs: Any) -> None:
    require(isinstance(kwargs, dict) and all(isinstance(k, str) and k.isidentifier() for k in kwargs),
            "env_kwargs", kwargs, "a mapping of keyword argument names to values")
    require(_plain(kwargs), "env_kwargs", kwargs,
            "plain values only (numbers, strings, booleans, null, lists and mappings of them)")


def _check_termination(cfg: TrainConfig) -> None:
    rule = cfg.mbpo.termination
    allowed = f"one of {', '.join(TERMINATIONS)}, or package.module:function"
    require(isinstance(rule, str) and (rule in TERMINATIONS or ENTRY_POINT.fullmatch(rule) is not None),
            "mbpo.termination", rule, allowed)
    require(rule != "known" or cfg.env_id in SUPPORTED_ENVS, "mbpo.termination", rule,
            f"known only for the paper envs ({', '.join(SUPPORTED_ENVS)}); for {cfg.env_id} use "
            f"learned, none or package.module:function")


def _check_model(m: ModelConfig) -> None:
    require(m.num_members >= 1, "model.num_members", m.num_members, "at least 1")
    require(1 <= m.num_elites <= m.num_members, "model.num_elites", m.num_elites,
            f"between 1 and model.num_members ({m.num_members})")
    require(m.hidden_width >= 1, "model.hidden_width", m.hidden_width, "at least 1")
    require(m.num_hidden_layers >= 1, "model.num_hidden_layers", m.num_hidden_layers, "at least 1")
    require(m.learning_rate > 0, "model.learning_rate", m.learning_rate, "a positive number")
    require(m.batch_size >= 1, "model.batch_size", m.batch_size, "at least 1")
    require(len(m.weight_decays) == m.num_hidden_layers + 1, "model.weight_decays", m.weight_decays,
            f"one value per layer: model.num_hidden_layers + 1 = {m.num_hidden_layers + 1} values")
    require(all(d >= 0 for d in m.weight_decays), "model.weight_decays", m.weight_decays,
            "non-negative values")
    require(0 <= m.holdout_ratio < 1, "model.holdout_ratio", m.holdout_ratio, "within [0, 1)")
    require(m.max_holdout >= 0, "model.max_holdout", m.max_holdout, "a non-negative integer")
    require(m.early_stop_patience >= 1, "model.early_stop_patience", m.early_stop_patience, "at least 1")
    require(m.improvement_threshold >= 0, "model.improvement_threshold", m.improvement_threshold,
            "a non-negative number")
    require(m.init_min_logvar < m.init_max_logvar, "model.init_min_logvar", m.init_min_logvar,
            f"below model.init_max_logvar ({m.init_max_logvar})")
    require(m.max_fit_epochs is None or m.max_fit_epochs >= 1, "model.max_fit_epochs",
            m.max_fit_epochs, "null (no cap) or at least 1")
    require(m.max_fit_seconds is None or m.max_fit_seconds > 0, "model.max_fit_seconds",
            m.max_fit_seconds, "null (no cap) or a positive number")
    require(m.termination_hidden_width >= 1, "model.termination_hidden_width", m.termination_hidden_width,
            "at least 1")
    require(m.termination_num_hidden_layers >= 1, "model.termination_num_hidden_layers",
            m.termination_num_hidden_layers, "at least 1")
    require(m.termination_max_epochs >= 1, "model.termination_max_epochs", m.termination_max_epochs,
            "at least 1")
    require(m.stacked_fit in ("auto", "always", "never"), "model.stacked_fit", m.stacked_fit,
            "auto, always or never")


def _check_sac(s: SACConfig) -> None:
    require(s.hidden_width >= 1, "sac.hidden_width", s.hidden_width, "at least 1")
    require(s.num_hidden_layers >= 1, "sac.num_hidden_layers", s.num_hidden_layers, "at least 1")
    require(s.learning_rate > 0, "sac.learning_rate", s.learning_rate, "a positive number")
    require(s.batch_size >= 1, "sac.batch_size", s.batch_size, "at least 1")
    require(0 < s.discount <= 1, "sac.discount", s.discount, "within (0, 1]")
    require(0 < s.tau <= 1, "sac.tau", s.tau, "within (0, 1]")
    require(s.replay_size >= 1, "sac.replay_size", s.replay_size, "at least 1")
    require(s.num_critics >= 2, "sac.num_critics", s.num_critics, "at least 2")
    require(1 <= s.critic_subset <= s.num_critics, "sac.critic_subset", s.critic_subset,
            f"between 1 and sac.num_critics ({s.num_critics})")


def _check_mbpo(b: MBPOConfig) -> None:
    require(b.epoch_length >= 1, "mbpo.epoch_length", b.epoch_length, "at least 1")
    start, end, min_k, max_k = b.rollout_schedule
    require(end > start >= 0, "mbpo.rollout_schedule", list(b.rollout_schedule),
            "[start_epoch, end_epoch, min_k, max_k] with 0 <= start_epoch < end_epoch")
    require(1 <= min_k <= max_k, "mbpo.rollout_schedule", list(b.rollout_schedule),
            "[start_epoch, end_epoch, min_k, max_k] with 1 <= min_k <= max_k")
    require(b.updates_per_step >= 0, "mbpo.updates_per_step", b.updates_per_step,
            "a non-negative integer")
    require(b.model_train_freq >= 1, "mbpo.model_train_freq", b.model_train_freq, "at least 1")
    require(b.rollout_batch_size >= 1, "mbpo.rollout_batch_size", b.rollout_batch_size, "at least 1")
    require(b.rollout_freq is None or b.rollout_freq >= 1, "mbpo.rollout_freq", b.rollout_freq,
            "null (= mbpo.model_train_freq) or at least 1")
    require(b.model_retain_epochs >= 1, "mbpo.model_retain_epochs", b.model_retain_epochs, "at least 1")
    require(0 <= b.real_ratio <= 1, "mbpo.real_ratio", b.real_ratio, "within [0, 1]")
    require(b.init_random_steps is None or b.init_random_steps >= 0, "mbpo.init_random_steps",
            b.init_random_steps, "a non-negative integer, or null (5 episodes of the env's time "
            "limit, within [500, 5000])")
    require(b.min_real_before_updates >= 1, "mbpo.min_real_before_updates",
            b.min_real_before_updates, "at least 1")


def _check_warmup(cfg: TrainConfig) -> None:
    # MBPO fits its model before its first env step after the warm-up: with no warm-up that fit
    # would run on an empty D_env (PETS, STEVE and SAC collect before they fit or update).
    b = cfg.mbpo
    require(not (cfg.algo == "mbpo" and b.real_ratio < 1 and b.init_random_steps == 0), "mbpo.init_random_steps",
            b.init_random_steps, "at least 1 for algo mbpo with mbpo.real_ratio < 1 (its first model fit "
            "needs real transitions), or null")


def _check_ray(cfg: TrainConfig) -> None:
    require(cfg.runtime in RUNTIMES, "runtime", cfg.runtime, f"one of {', '.join(RUNTIMES)}")
    require(cfg.runtime == "local" or cfg.algo in ("mbpo", "sac"), "runtime", cfg.runtime,
            f"local for algo={cfg.algo} (the ray runtime runs mbpo and sac)")
    r, b = cfg.ray, cfg.mbpo
    require(r.schedule in SCHEDULES, "ray.schedule", r.schedule, f"one of {', '.join(SCHEDULES)}")
    require(r.num_collectors >= 1, "ray.num_collectors", r.num_collectors, "at least 1")
    require(r.num_rollout_workers >= 1, "ray.num_rollout_workers", r.num_rollout_workers, "at least 1")
    for name in ("collector_cpus", "rollout_worker_cpus", "model_trainer_cpus", "learner_cpus",
                 "buffer_cpus") + RAY_GPU_FIELDS:
        require(getattr(r, name) >= 0, f"ray.{name}", getattr(r, name), "a non-negative number")
    require(r.object_store_mb >= 64, "ray.object_store_mb", r.object_store_mb, "at least 64")
    require(r.max_actor_restarts >= 0, "ray.max_actor_restarts", r.max_actor_restarts,
            "a non-negative integer")
    require(r.collector_chunk >= 1 and b.epoch_length % r.collector_chunk == 0, "ray.collector_chunk",
            r.collector_chunk, f"a divisor of mbpo.epoch_length ({b.epoch_length})")
    require(r.learner_chunk >= 1, "ray.learner_chunk", r.learner_chunk, "at least 1")
    low = r.min_updates_per_step
    high = b.updates_per_step if r.max_updates_per_step is None else r.max_updates_per_step
    require(high >= 0, "ray.max_updates_per_step", r.max_updates_per_step, "null or non-negative")
    require(low is None or 0 <= low <= high, "ray.min_updates_per_step", low,
            f"null or within [0, max updates per step = {high}]")
    if cfg.runtime == "ray":
        _check_ray_devices(cfg)


def _check_ray_devices(cfg: TrainConfig) -> None:
    """Ray assigns GPUs to actors (ray.*_gpus) and each actor runs on the one it got (see
    mbpo_ray.devices): a device that names one GPU, or asks for none, cannot hold."""
    r = cfg.ray
    require(cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device,
            "with runtime=ray Ray assigns GPUs to actors: use device=auto or cuda (or cpu)")
    asked = [name for name in RAY_GPU_FIELDS if getattr(r, name) > 0]
    if cfg.device == "cpu" and asked:
        raise ConfigError(f"ray.{asked[0]}={getattr(r, asked[0])!r} is not allowed with device=cpu: "
                          f"set it to 0, or use device=auto or cuda")
    if cfg.device == "cuda" and not asked:
        raise ConfigError(f"device='cuda' with runtime=ray needs a GPU for some actor: set one of "
                          f"{', '.join('ray.' + n for n in RAY_GPU_FIELDS)} above 0, or use device=auto")


def _check_pets(p: PETSConfig) -> None:
    require(p.horizon >= 1, "pets.horizon", p.horizon, "at least 1")
    require(p.population >= 2, "pets.population", p.population, "at least 2")
    require(1 <= p.num_elites <= p.population, "pets.num_elites", p.num_elites,
            f"between 1 and pets.population ({p.population})")
    require(p.iterations >= 1, "pets.iterations", p.iterations, "at least 1")
    require(0 <= p.smoothing < 1, "pets.smoothing", p.smoothing, "within [0, 1)")
    require(p.min_variance >= 0, "pets.min_variance", p.min_variance, "a non-negative number")
    require(p.num_particles >= 1, "pets.num_particles", p.num_particles, "at least 1")
    require(p.propagation in PROPAGATIONS, "pets.propagation", p.propagation,
            f"one of {', '.join(PROPAGATIONS)}")
    require(p.random_episodes >= 1, "pets.random_episodes", p.random_episodes, "at least 1")
    require(p.nan_cost > 0, "pets.nan_cost", p.nan_cost, "a positive number")


def _check_steve(cfg: TrainConfig) -> None:
    v = cfg.steve
    require(v.horizon >= 0, "steve.horizon", v.horizon, "a non-negative integer")
    for name in ("num_q", "num_dynamics", "num_reward", "num_done"):
        require(getattr(v, name) >= 1, f"steve.{name}", getattr(v, name), "at least 1")
    require(v.model_hidden_width >= 1, "steve.model_hidden_width", v.model_hidden_width, "at least 1")
    require(v.model_num_hidden_layers >= 1, "steve.model_num_hidden_layers",
            v.model_num_hidden_layers, "at least 1")
    require(v.model_learning_rate > 0, "steve.model_learning_rate", v.model_learning_rate,
            "a positive number")
    # STEVE learns from real transitions only (its models expand the TD target instead).
    require(cfg.algo != "steve" or cfg.mbpo.real_ratio == 1.0, "mbpo.real_ratio", cfg.mbpo.real_ratio,
            "1 with algo steve (STEVE has no model buffer)")


def _check_mbpo_plus(cfg: TrainConfig) -> None:
    """The MBPO+ options (docs/mbpo_plus.md): their values, and the algorithms and runtimes that
    take each."""
    b, s = cfg.mbpo, cfg.sac
    require(b.rollout_uncertainty in ROLLOUT_UNCERTAINTIES, "mbpo.rollout_uncertainty", b.rollout_uncertainty,
            f"one of {', '.join(ROLLOUT_UNCERTAINTIES)}")
    require(0 < b.m2ac_keep_rate <= 1, "mbpo.m2ac_keep_rate", b.m2ac_keep_rate, "within (0, 1]")
    require(0 < b.macura_quantile <= 100, "mbpo.macura_quantile", b.macura_quantile, "within (0, 100]")
    require(b.macura_scale > 0, "mbpo.macura_scale", b.macura_scale, "a positive number")
    require(b.uncertainty_penalty >= 0, "mbpo.uncertainty_penalty", b.uncertainty_penalty,
            "a non-negative number")
    require(b.model_reset_every >= 0 and b.model_reset_every % b.model_train_freq == 0,
            "mbpo.model_reset_every", b.model_reset_every,
            f"0 (never) or a multiple of mbpo.model_train_freq ({b.model_train_freq}): a reset comes right "
            f"before a fit")
    require(b.agent_reset_every >= 0, "mbpo.agent_reset_every", b.agent_reset_every,
            "0 (never) or a positive number of env steps")
    model_options = [name for name, on in (("mbpo.rollout_uncertainty", b.rollout_uncertainty != "none"),
                                           ("mbpo.model_reset_every", b.model_reset_every > 0)) if on]
    for name in model_options:
        value = getattr(b, name.split(".")[1])
        require(cfg.algo == "mbpo" and b.real_ratio < 1, name, value,
                f"its default with algo {cfg.algo} and mbpo.real_ratio {b.real_ratio} (it acts on MBPO's model "
                f"rollouts: algo mbpo with mbpo.real_ratio < 1)")
    require(not cfg.model.normalize_targets or cfg.algo in ("mbpo", "pets"), "model.normalize_targets",
            cfg.model.normalize_targets, f"false with algo {cfg.algo} (it acts on the dynamics ensemble of mbpo "
            f"and pets)")
    sac_algos = ("mbpo", "sac")
    require(b.agent_reset_every == 0 or cfg.algo in sac_algos, "mbpo.agent_reset_every", b.agent_reset_every,
            f"0 with algo {cfg.algo} (it resets the SAC learner of mbpo and sac)")
    redq = s.num_critics != 2 or s.critic_subset != 2
    require(not redq or cfg.algo in sac_algos, "sac.num_critics", s.num_critics,
            f"2 (with sac.critic_subset 2) for algo {cfg.algo} (a critic ensemble is the SAC learner's of mbpo "
            f"and sac; steve has steve.num_q)")
    for name in ("critic_layer_norm", "policy_layer_norm"):
        require(not getattr(s, name) or cfg.algo in ("mbpo", "sac", "steve"), f"sac.{name}", getattr(s, name),
                f"false with algo {cfg.algo} (the SAC learner of mbpo, sac and steve)")
    if cfg.runtime == "ray":
        # The Ray runtime's roles hold the learner, the ensemble and stateless rollout workers: the
        # options that live there run; the ones with state of their own in the loop do not.
        require(b.rollout_uncertainty != "macura", "mbpo.rollout_uncertainty", b.rollout_uncertainty,
                "none or m2ac with runtime ray (macura's threshold is state of the run's driver, which the "
                "ray runtime's rollout workers do not share); use runtime local")
        for name in ("model_reset_every", "agent_reset_every"):
            require(getattr(b, name) == 0, f"mbpo.{name}", getattr(b, name),
                    "0 with runtime ray (resets run on the local runtime); use runtime local")
