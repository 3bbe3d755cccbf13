"""STEVE (Buckman et al. 2018) with a SAC base learner, as an ``Algorithm``.

The loop is MBPO's (``MBPOLoop``) with no model data (``mbpo.real_ratio`` 1, which validate()
requires for algo steve): ``mbpo.init_random_steps`` uniform-random env steps, then per env
step one policy step into D_env and ``mbpo.updates_per_step`` STEVE updates on batches of
``sac.batch_size`` real transitions once D_env holds ``mbpo.min_real_before_updates``; an
evaluation and a metrics record every ``mbpo.epoch_length`` env steps and at the end. So the
records have MBPO's keys, eval seeds and perf/ timers (perf/sac_seconds is the time in STEVE
updates, model fitting included; perf/model_seconds and perf/rollout_seconds stay 0: STEVE's
models are fit inside its update). The learner is ``mbpo_ray.agents.steve.STEVELearner``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch

from mbpo_ray.agents.metrics import MetricMean
from mbpo_ray.agents.steve import STEVELearner
from mbpo_ray.algos.mbpo import MBPO, MBPOLoop
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.envs import get_env_state, make_env, set_env_state
from mbpo_ray.evaluation import evaluate_policy
from mbpo_ray.runtime.local import ActionScaler


class STEVERuntime:
    """The part of the Runtime interface that MBPOLoop uses without model data: env, D_env,
    the STEVE learner and evaluation, all in this process."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.env = make_env(cfg.env_id, seed=cfg.seed)
        self.eval_env = make_env(cfg.env_id)
        self.obs_dim = self.env.observation_space.shape[0]
        self.act_dim = self.env.action_space.shape[0]
        self.scaler = ActionScaler(self.env.action_space)
        self.action_rng = np.random.default_rng(cfg.seed)

        self.agent = STEVELearner(self.obs_dim, self.act_dim, cfg.sac, cfg.steve, device)
        self.real_buffer = ReplayBuffer(self.obs_dim, self.act_dim,
                                        min(cfg.sac.replay_size, cfg.total_steps), device)

        self.obs, _ = self.env.reset(seed=cfg.seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.metrics = MetricMean(self.agent.metric_names, device)

    # --- env ---
    def env_step(self, random_action: bool) -> Optional[float]:
        if random_action:
            action = self.action_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        else:
            obs_t = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)[None]
            action = self.agent.policy.act(obs_t)[0].cpu().numpy()
        next_obs, reward, terminated, truncated, _ = self.env.step(self.scaler.to_env(action))
        # Time-limit truncation is not terminal: only `terminated` is stored.
        # One row [obs | act | reward | next_obs | terminated], the buffer's layout.
        row = np.concatenate([self.obs, action, [reward], next_obs, [float(terminated)]])
        row = torch.as_tensor(row.astype(np.float32), device=self.device)[None]
        self.real_buffer.add_rows(row)
        obs_t, _, rew_t, next_obs_t, _ = self.real_buffer.split(row)
        self.agent.observe(obs_t, rew_t, next_obs_t)
        self.episode_return += float(reward)
        self.episode_length += 1
        self.obs = next_obs
        if terminated or truncated:
            finished = self.episode_return
            self.obs, _ = self.env.reset()
            self.episode_return, self.episode_length = 0.0, 0
            return finished
        return None

    def real_size(self) -> int:
        return len(self.real_buffer)

    def fit_model(self) -> Dict[str, float]:
        raise NotImplementedError("STEVE fits its models inside each update (mbpo.real_ratio must be 1)")

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        raise NotImplementedError("STEVE keeps no model buffer (mbpo.real_ratio must be 1)")

    # --- agent ---
    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        batch_size = self.cfg.sac.batch_size
        for _ in range(num_updates):
            self.metrics.add(self.agent.update(*self.real_buffer.sample(batch_size)))

    def agent_metrics(self) -> Dict[str, float]:
        return self.metrics.read()

    def runtime_metrics(self) -> Dict[str, float]:
        return {}

    # --- evaluation ---
    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        def act(obs):
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)[None]
            return self.scaler.to_env(self.agent.policy.act(obs_t, deterministic=True)[0].cpu().numpy())
        return evaluate_policy(self.eval_env, act, episodes, seed)

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        return {
            "agent": self.agent.full_state_dict(),
            "real_buffer": self.real_buffer.state_dict(),
            "env": get_env_state(self.env),
            "obs": np.array(self.obs),
            "episode": (self.episode_return, self.episode_length),
            "action_rng": self.action_rng.bit_generator.state,
            **self.metrics.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.agent.load_full_state_dict(state["agent"])
        self.real_buffer.load_state_dict(state["real_buffer"])
        # A resumed run may have been given more steps: D_env grows, it never drops data.
        wanted = min(self.cfg.sac.replay_size, self.cfg.total_steps)
        self.real_buffer.resize(max(wanted, self.real_buffer.capacity))
        set_env_state(self.env, state["env"])
        self.obs = state["obs"]
        self.episode_return, self.episode_length = state["episode"]
        self.action_rng.bit_generator.state = state["action_rng"]
        self.metrics.load_state_dict(state)


class STEVE(MBPO):
    """MBPO's loop with no model data (real_ratio 1) over the STEVE runtime above."""

    def make_runtime(self, cfg: TrainConfig, device):
        self.title = "STEVE"
        return STEVERuntime(cfg, device), MBPOLoop
