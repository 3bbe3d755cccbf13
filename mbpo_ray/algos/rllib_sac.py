"""RLlib's SAC (new API stack) as an ``Algorithm``: an external reference implementation of the
model-free SAC baseline (docs/baselines.md, "rllib-sac"), driven by ``mbpo_ray.train`` like every other
algorithm, so its run directory, metric keys and stop/resume behaviour are the same.

How our config maps onto RLlib's ``SACConfig`` (``rllib_sac_config`` builds it):

    sac.discount                     -> gamma
    sac.tau                          -> tau (Polyak, after every update: target_network_update_freq=0)
    sac.learning_rate                -> actor_lr, critic_lr, alpha_lr
    sac.batch_size                   -> train_batch_size_per_learner
    sac.hidden_width x num_hidden_layers, ReLU
                                     -> model_config fcnet_hiddens / fcnet_activation,
                                        head_fcnet_hiddens=[] (policy: obs -> 2x256 -> mean, log_std)
    sac.init_log_alpha               -> initial_alpha = exp(init_log_alpha)
    sac.target_entropy (None)        -> target_entropy ("auto" = -action_dim)
    min(sac.replay_size, total_steps)-> replay_buffer_config capacity (uniform EpisodeReplayBuffer;
                                        RLlib's default is a prioritized buffer)
    max(mbpo.init_random_steps, mbpo.min_real_before_updates)
                                     -> num_steps_sampled_before_learning_starts
    mbpo.updates_per_step (G)        -> training_intensity = G x batch_size with
                                        rollout_fragment_length=1: each training_step samples one
                                        env step and does G updates (RLlib's calculate_rr_weights)
    seed                             -> debugging(seed=...)
    device (cuda)                    -> learners(num_gpus_per_learner=1, local_gpu_idx=...)

Like for like, except where RLlib differs and offers no switch (all measured or read from
RLlib 2.60's source):
  * The Q networks: RLlib 2.60 encodes obs and action in separate MLPs and joins them in a
    "fusion" net with skip connections and tanh. We give RLlib's module a catalog
    (``ConcatQSACCatalog``) whose Q encoder is the usual MLP on concat(obs, action), so both Q
    nets are concat(obs, action) -> 2x256 ReLU -> 1 as in the paper's SAC.
  * The critic loss is a Huber loss (delta 1), not the squared error: logged as
    ``train/q_loss_huber``. The policy's log_std is clamped to [-5, 2] (ours: [-20, 2]) and
    RLlib's Adam uses eps 1e-7 (ours: 1e-8).
  * The warm-up steps sample RLlib's initial stochastic policy, not uniform-random actions,
    and the first update comes after the learning_starts-th step (ours: after the next one).
  * RLlib seeds its replay sampler with fresh OS entropy; we seed it from ``seed`` so that a
    run repeats exactly on one machine.
  * RLlib's own "deterministic" action for a squashed Gaussian is the *pre-tanh* mean; our
    evaluation uses tanh(mean), the same mean action as our SAC (``TanhGaussianPolicy.act``).

One ``step()`` is one RLlib ``train()`` iteration of ``iteration_steps(cfg)`` env steps, a divisor
of the epoch length, of total_steps and of the step a resumed run starts from, so iterations end
exactly on every epoch boundary. With rollout_fragment_length=1 and one env, RLlib samples exactly
one env step per training_step and stops an iteration as soon as it has enough, so it never
overshoots; if it ever did, the record is still written at the first step past the boundary, with
the real ``env_steps`` and the epoch of the boundary crossed.

Checkpoints: ``state_dict`` writes ``Algorithm.save_to_path`` (learner: module weights incl.
target nets, optimizers, alpha; env-runner connector state; metrics logger with the lifetime
step counters; training iteration) into ``RUN/rllib_checkpoint``. On the new API stack RLlib does
not put the replay buffer in that checkpoint (``store_buffer_in_checkpoints`` only acts on the
old stack), so we pickle ``local_replay_buffer.get_state()`` next to it. The ongoing training
episode is not saved: a resumed run starts a new episode.

Ray is imported only in here (and lazily: importing this module does not import Ray).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from mbpo_ray.data.buffers import d_env_capacity
from mbpo_ray.algos.records import EpochTimer, epoch_of, epoch_record, eval_seed
from mbpo_ray.config import TrainConfig
from mbpo_ray.devices import resolve_device
from mbpo_ray.envs import ActionScaler, make_env
from mbpo_ray.errors import ConfigError
from mbpo_ray.evaluation import evaluate_policy

CHECKPOINT_DIR = "rllib_checkpoint"  # inside the run directory
REPLAY_FILE = "replay_buffer.pkl"  # inside CHECKPOINT_DIR
STATE_FILE = "mbpo_ray_state.json"  # inside CHECKPOINT_DIR: our bookkeeping
STATE_FORMAT = 1
RAY_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; nothing big goes there

# Our per-episode training return, logged by the EnvRunner (sum and count over one iteration).
_RETURN_SUM_KEY = "mbpo_ray_episode_return_sum"
_EPISODES_KEY = "mbpo_ray_episodes"


def env_name(env_id: str) -> str:
    return f"mbpo_ray/{env_id}"


def register_env(env_id: str, env_kwargs=None) -> str:
    """Register our ``make_env`` (with the paper's Ant/Humanoid observation truncation, and the
    run's ``env_kwargs``) with Ray Tune's registry under ``env_name(env_id)``."""
    from ray.tune.registry import register_env as ray_register_env

    name = env_name(env_id)
    ray_register_env(name, lambda env_config: make_env(env_id, kwargs=env_kwargs))
    return name


def learning_starts(cfg: TrainConfig) -> int:
    # Our loop updates once the warm-up is over and D_env holds min_real_before_updates.
    return max(cfg.mbpo.init_random_steps, cfg.mbpo.min_real_before_updates)


def iteration_steps(cfg: TrainConfig, start_steps: int = 0) -> int:
    """Env steps per RLlib iteration: the largest number that divides the epoch length,
    total_steps and the step the run starts from (gcd(n, 0) = n)."""
    return math.gcd(math.gcd(cfg.mbpo.epoch_length, cfg.total_steps), start_steps)


def check_supported(cfg: TrainConfig) -> None:
    if cfg.mbpo.updates_per_step < 1:
        raise ConfigError(f"mbpo.updates_per_step={cfg.mbpo.updates_per_step!r} is not allowed "
                          f"for algo rllib-sac: at least 1 (RLlib's training_intensity)")
    if cfg.mbpo.real_ratio != 1.0:
        raise ConfigError(f"mbpo.real_ratio={cfg.mbpo.real_ratio!r} is not allowed for algo "
                          f"rllib-sac: 1.0 (RLlib's SAC has no model data)")


def rllib_sac_config(cfg: TrainConfig, device: Optional[torch.device] = None,
                     steps_per_iteration: Optional[int] = None):
    """RLlib's ``SACConfig`` for ``cfg`` (the mapping in the module docstring)."""
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    check_supported(cfg)
    s, b = cfg.sac, cfg.mbpo
    device = torch.device("cpu") if device is None else torch.device(device)
    use_gpu = device.type == "cuda"
    target_entropy = "auto" if s.target_entropy is None else float(s.target_entropy)
    fragment = 1  # one env step per training_step: G updates after every env step
    return (
        SACConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(register_env(cfg.env_id, cfg.env_kwargs))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1,
                     rollout_fragment_length=fragment)
        .learners(num_learners=0, num_gpus_per_learner=1 if use_gpu else 0,
                  local_gpu_idx=(device.index or 0) if use_gpu else 0)
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=[s.hidden_width] * s.num_hidden_layers,
                fcnet_activation="relu",
                head_fcnet_hiddens=[],
            ),
            rl_module_spec=RLModuleSpec(module_class=DefaultSACTorchRLModule,
                                        catalog_class=_rllib_class("ConcatQSACCatalog")),
        )
        .training(
            gamma=s.discount,
            tau=s.tau,
            actor_lr=s.learning_rate,
            critic_lr=s.learning_rate,
            alpha_lr=s.learning_rate,
            train_batch_size_per_learner=s.batch_size,
            initial_alpha=math.exp(s.init_log_alpha),
            target_entropy=target_entropy,
            twin_q=True,
            n_step=1,
            target_network_update_freq=0,
            grad_clip=None,
            replay_buffer_config={"type": "EpisodeReplayBuffer",
                                  "capacity": d_env_capacity(cfg)},
            num_steps_sampled_before_learning_starts=learning_starts(cfg),
            # calculate_rr_weights: G = training_intensity / (batch / fragment), rounded
            training_intensity=float(b.updates_per_step * s.batch_size / fragment),
        )
        .reporting(
            min_sample_timesteps_per_iteration=steps_per_iteration or iteration_steps(cfg),
            min_time_s_per_iteration=0,
            min_train_timesteps_per_iteration=0,
        )
        .callbacks(on_episode_end=_log_episode_return)
        .debugging(seed=cfg.seed)
    )


def _log_episode_return(*, episode, prev_episode_chunks=None, metrics_logger=None, **kwargs):
    """EnvRunner callback: log the finished episode's return (all its chunks: with
    rollout_fragment_length=1 the final chunk holds one step)."""
    total = float(episode.get_return()) + sum(float(c.get_return()) for c in prev_episode_chunks or [])
    metrics_logger.log_value(_RETURN_SUM_KEY, total, reduce="sum")
    metrics_logger.log_value(_EPISODES_KEY, 1, reduce="sum")


def _finite_or_zero(value: Any) -> float:
    """An RLlib metric as a number: a missing or NaN one is 0."""
    number = float(value)
    return number if math.isfinite(number) else 0.0


# --- RLlib subclasses, defined on first use so that importing this module stays cheap --------

def _define_rllib_classes() -> None:
    from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.models.configs import MLPEncoderConfig
    from ray.rllib.core.models.torch.encoder import TorchMLPEncoder

    class ConcatObsActionEncoder(TorchMLPEncoder):
        """An MLP on concat(obs, action): the Q network's body in the paper's SAC."""

        def _forward(self, inputs, **kwargs):
            joint = torch.cat([inputs[Columns.OBS], inputs[Columns.ACTIONS]], dim=-1)
            return super()._forward({Columns.OBS: joint}, **kwargs)

    class ConcatQSACCatalog(SACCatalog):
        """RLlib's SAC catalog with Q = MLP(concat(obs, action)) for Box action spaces
        (hidden layers fcnet_hiddens with fcnet_activation, then RLlib's linear Q head)."""

        def _build_qf_encoder_continuous(self, framework: str):
            hiddens = list(self._model_config_dict["fcnet_hiddens"])
            activation = self._model_config_dict["fcnet_activation"]
            obs_dim = int(np.prod(self.observation_space.shape))
            act_dim = int(np.prod(self.action_space.shape))
            config = MLPEncoderConfig(
                input_dims=[obs_dim + act_dim],
                hidden_layer_dims=hiddens[:-1],
                hidden_layer_activation=activation,
                output_layer_dim=hiddens[-1],
                output_layer_activation=activation,
            )
            assert framework == "torch", framework
            return ConcatObsActionEncoder(config)

    for cls in (ConcatObsActionEncoder, ConcatQSACCatalog):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__  # picklable by reference (RLlib pickles the spec)
        globals()[cls.__name__] = cls


_RLLIB_CLASSES = ("ConcatObsActionEncoder", "ConcatQSACCatalog")


def _rllib_class(name: str):
    if name not in globals():
        _define_rllib_classes()
    return globals()[name]


def __getattr__(name: str):  # module attribute access, e.g. by pickle
    if name in _RLLIB_CLASSES:
        return _rllib_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the Algorithm -----------------------------------------------------------------------------

class RLlibSAC:
    """RLlib's SAC on one process: a local EnvRunner (num_env_runners=0) and a local Learner
    (num_learners=0), inside Ray's local cluster (started here only if Ray is not running)."""

    title = "RLlib SAC"

    def __init__(self, cfg: TrainConfig, device, run_path: Path):
        check_supported(cfg)
        self.cfg, self.run_path = cfg, Path(run_path)
        # validation refuses mps for rllib-sac: RLlib's learner runs on the CPU or CUDA only
        self.device = resolve_device(cfg.device) if device is None else torch.device(device)
        self.eval_env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
        self.scaler = ActionScaler(self.eval_env.action_space)
        self._started_ray = False
        self.algo = None
        self._steps_per_iteration = 0
        try:
            self._ensure_ray()
            self._build(iteration_steps(cfg))
        except BaseException:
            self.close()  # train() only closes an algorithm that was constructed
            raise

        self._env_steps = 0
        self._timer = EpochTimer(("rllib_train", "eval"), 0)
        self._last_eval: Optional[float] = None
        self._last_learner: Dict[str, Any] = {}
        self._reset_epoch_stats()

    # --- lifecycle ---
    def _ensure_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            # address="local": a fresh in-process instance even when another Ray runs on
            # this machine (without it, ray.init joins that one and refuses num_cpus)
            ray.init(address="local", num_cpus=1, num_gpus=1 if self.device.type == "cuda" else 0,
                     include_dashboard=False, object_store_memory=RAY_OBJECT_STORE_BYTES,
                     log_to_driver=False)
            self._started_ray = True

    def _build(self, steps_per_iteration: int) -> None:
        if self.algo is not None:
            self._stop_algo()
        config = rllib_sac_config(self.cfg, self.device, steps_per_iteration)
        self.algo = config.build_algo()
        # RLlib seeds its replay buffer's sampler with None (fresh OS entropy): seed it from
        # ours so that a run is repeatable (RLlib's seed covers the module, env and torch).
        self.algo.local_replay_buffer.rng = np.random.default_rng(self.cfg.seed)
        self._steps_per_iteration = steps_per_iteration

    def _stop_algo(self) -> None:
        logdir = getattr(self.algo, "logdir", None)
        self.algo.stop()
        self.algo = None
        # Ray's Trainable makes an (on the new API stack empty) log directory under
        # ~/ray_results for every Algorithm: remove ours if nothing was written there.
        if logdir and os.path.isdir(logdir) and not os.listdir(logdir):
            os.rmdir(logdir)

    def close(self) -> None:
        if self.algo is not None:
            self._stop_algo()
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    # --- the protocol ---
    @property
    def env_steps(self) -> int:
        return self._env_steps

    @property
    def last_eval(self) -> Optional[float]:
        return self._last_eval

    def _reset_epoch_stats(self) -> None:
        self._return_sum, self._episodes, self._updates = 0.0, 0, 0

    def step(self) -> Optional[Dict[str, Any]]:
        """One RLlib ``train()`` iteration; the epoch's record when it reached an epoch end."""
        from ray.rllib.utils.metrics import (ALL_MODULES, ENV_RUNNER_RESULTS, LEARNER_RESULTS,
                                             NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_ENV_STEPS_TRAINED)

        before = self._env_steps
        result = self._timer.timed("rllib_train", self.algo.train)
        runners = result.get(ENV_RUNNER_RESULTS, {})
        self._env_steps = int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, before))
        if self._env_steps <= before:
            raise RuntimeError(f"RLlib sampled no env steps in an iteration (at {before})")
        # an iteration in which no episode ended reports NaN for the episode sums (HalfCheetah:
        # 1,000-step episodes), which counts as none
        self._return_sum += _finite_or_zero(runners.get(_RETURN_SUM_KEY, 0.0))
        self._episodes += int(_finite_or_zero(runners.get(_EPISODES_KEY, 0)))
        learners = result.get(LEARNER_RESULTS, {})
        trained = _finite_or_zero(learners.get(ALL_MODULES, {}).get(NUM_ENV_STEPS_TRAINED, 0))
        self._updates += int(round(trained / self.cfg.sac.batch_size))
        if learners.get("default_policy"):
            self._last_learner = learners["default_policy"]

        length = self.cfg.mbpo.epoch_length
        if self._env_steps // length > before // length or self._env_steps >= self.cfg.total_steps:
            return self._end_epoch()
        return None

    def _end_epoch(self) -> Dict[str, Any]:
        cfg = self.cfg
        seed = eval_seed(cfg.seed, epoch_of(self._env_steps, cfg.mbpo.epoch_length), cfg.eval_episodes)
        evaluation = self._timer.timed("eval", self.evaluate, cfg.eval_episodes, seed)
        self._last_eval = evaluation["eval/return_mean"]
        record = epoch_record(self._env_steps, cfg.mbpo.epoch_length, [], learning_starts(cfg))
        if self._episodes:  # RLlib reports the epoch's episodes as a sum and a count
            record["train/episode_return"] = self._return_sum / self._episodes
            record["train/episodes"] = self._episodes
        if self._updates:
            record["train/updates"] = self._updates
            record.update(self._learner_metrics())
        record.update(evaluation)
        perf = self._timer.perf(self._env_steps)
        record.update({key: perf[key] for key in ("perf/sps", "perf/epoch_seconds", "perf/rllib_train_seconds",
                                                  "perf/eval_seconds")})
        self._reset_epoch_stats()
        return record

    def _learner_metrics(self) -> Dict[str, float]:
        """RLlib's SAC stats of the iteration's last update, under our names where they mean
        the same (RLlib's critic loss is a Huber loss, hence its own name)."""
        names = {"policy_loss": "train/policy_loss", "alpha_loss": "train/alpha_loss",
                 "alpha_value": "train/alpha", "qf_mean": "train/q_mean",
                 "qf_loss": "train/q_loss_huber"}
        out = {}
        for theirs, ours in names.items():
            if theirs in self._last_learner:
                out[ours] = float(self._last_learner[theirs])
        if "logps" in self._last_learner:
            out["train/entropy"] = -float(self._last_learner["logps"])
        return out

    # --- evaluation ---
    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action of RLlib's current module, in [-1, 1]: tanh of the mean
        of its squashed Gaussian."""
        from ray.rllib.core.columns import Columns

        module = self.algo.get_module()
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None])
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: obs_t})
        mean, _log_std = out[Columns.ACTION_DIST_INPUTS].chunk(2, dim=-1)
        return torch.tanh(mean)[0].cpu().numpy().astype(np.float64)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``mean_action``: the policy outside training (a video of the run: mbpo_ray.video.policy)."""
        return self.mean_action(obs)

    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        return evaluate_policy(self.eval_env, lambda obs: self.scaler.to_env(self.mean_action(obs)),
                               episodes, seed)

    def module_weights(self) -> Dict[str, np.ndarray]:
        """All weights of the learner's module (policy, Q nets, target Q nets), as numpy."""
        module = self.algo.learner_group._learner.module["default_policy"]
        return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}

    # --- checkpoints ---
    def _bookkeeping(self) -> Dict[str, Any]:
        return {"format": STATE_FORMAT, "env_steps": self._env_steps, "last_eval": self._last_eval,
                "epoch_start_steps": self._timer.start_steps, "return_sum": self._return_sum,
                "episodes": self._episodes, "updates": self._updates}

    def state_dict(self) -> Dict[str, Any]:
        """Save RLlib's algorithm (and its replay buffer) to RUN/rllib_checkpoint atomically:
        written to a temporary directory, then swapped in."""
        final = self.run_path / CHECKPOINT_DIR
        tmp = final.with_name(CHECKPOINT_DIR + ".tmp")
        old = final.with_name(CHECKPOINT_DIR + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        self.algo.save_to_path(str(tmp))
        with open(tmp / REPLAY_FILE, "wb") as f:
            pickle.dump(self.algo.local_replay_buffer.get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
        bookkeeping = self._bookkeeping()
        (tmp / STATE_FILE).write_text(json.dumps(bookkeeping))
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)  # from here on the new checkpoint is the one a resume reads
        shutil.rmtree(old, ignore_errors=True)
        return {"path": CHECKPOINT_DIR, **bookkeeping}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        path = self.run_path / state["path"]
        if not path.is_dir():  # interrupted between the two renames of state_dict
            path = path.with_name(path.name + ".old")
        if not path.is_dir():
            raise FileNotFoundError(f"RLlib checkpoint {self.run_path / state['path']} is missing")
        # The checkpoint's own bookkeeping: it is the newer one if the run stopped after
        # swapping in RLlib's checkpoint but before checkpoint.pt was written.
        saved = json.loads((path / STATE_FILE).read_text())
        steps = iteration_steps(self.cfg, saved["env_steps"])
        if steps != self._steps_per_iteration:
            self._build(steps)  # iterations must land on this run's epoch boundaries
        self.algo.restore_from_path(str(path))
        replay = path / REPLAY_FILE
        if replay.is_file():
            with open(replay, "rb") as f:
                self.algo.local_replay_buffer.set_state(pickle.load(f))
        # The sampler's state is not in the buffer's state: a fresh stream for the rest of the run.
        self.algo.local_replay_buffer.rng = np.random.default_rng([self.cfg.seed, saved["env_steps"]])
        self._env_steps = saved["env_steps"]
        self._last_eval = saved["last_eval"]
        self._reset_epoch_stats()
        self._timer.restart(saved["epoch_start_steps"])
        self._return_sum, self._episodes = saved["return_sum"], saved["episodes"]
        self._updates = saved["updates"]
        restored = self.rllib_env_steps()
        if restored != self._env_steps:
            raise RuntimeError(f"RLlib's checkpoint restored {restored} sampled env steps, "
                               f"expected {self._env_steps}")

    def rllib_env_steps(self) -> int:
        from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

        return int(self.algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME),
                                          default=0))
