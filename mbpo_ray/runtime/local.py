"""Runtimes that keep everything of one run in this process."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch

from mbpo_ray.agents.metrics import MetricMean
from mbpo_ray.agents.sac import METRIC_NAMES, SAC
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer, sample_mixed
from mbpo_ray.envs import get_env_state, make_env, set_env_state, termination_fn
from mbpo_ray.evaluation import evaluate_policy
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.rollout import branched_rollout


class ActionScaler:
    """Policies act in [-1, 1]; envs get actions in their own box."""

    def __init__(self, space):
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return self.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)


class AgentRuntime:
    """The env, D_env, an agent (SAC unless ``make_agent`` says otherwise) and evaluation, all in
    this process: the part of the Runtime interface that needs no dynamics model. Used as it is
    for algorithms whose loop adds no model data (real_ratio 1); ``LocalRuntime`` adds MBPO's
    model, D_model and rollouts."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.env = make_env(cfg.env_id, seed=cfg.seed)
        self.eval_env = make_env(cfg.env_id)
        self.obs_dim = self.env.observation_space.shape[0]
        self.act_dim = self.env.action_space.shape[0]
        self.scaler = ActionScaler(self.env.action_space)
        self.action_rng = np.random.default_rng(cfg.seed)

        self.agent, metric_names = self.make_agent()
        real_capacity = min(cfg.sac.replay_size, cfg.total_steps)
        self.real_buffer = ReplayBuffer(self.obs_dim, self.act_dim, real_capacity, device)

        self.obs, _ = self.env.reset(seed=cfg.seed)
        self.episode_return, self.episode_length = 0.0, 0
        self.metrics = MetricMean(metric_names, device)

    def make_agent(self):
        """The learner and the names of the metrics its ``update`` returns."""
        return SAC(self.obs_dim, self.act_dim, self.cfg.sac, self.device), METRIC_NAMES

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
        self.observe(row)
        self.episode_return += float(reward)
        self.episode_length += 1
        self.obs = next_obs
        if terminated or truncated:
            finished = self.episode_return
            self.obs, _ = self.env.reset()
            self.episode_return, self.episode_length = 0.0, 0
            return finished
        return None

    def observe(self, row: torch.Tensor) -> None:
        """Called with each real transition (a [1, width] row) after it is stored."""

    def real_size(self) -> int:
        return len(self.real_buffer)

    # --- model (none here) ---
    def fit_model(self) -> Dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} has no dynamics model to fit (mbpo.real_ratio must be 1)")

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} keeps no model buffer (mbpo.real_ratio must be 1)")

    # --- agent ---
    def sample_batch(self, batch_size: int, real_ratio: float):
        return self.real_buffer.sample(batch_size)

    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        batch_size = self.cfg.sac.batch_size
        for _ in range(num_updates):
            self.metrics.add(self.agent.update(*self.sample_batch(batch_size, real_ratio)))

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


class LocalRuntime(AgentRuntime):
    """Everything of an MBPO run in this process: env, D_env, D_model, ensemble, SAC."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        super().__init__(cfg, device)
        self.termination = termination_fn(cfg.env_id)
        self.model = ProbabilisticEnsemble(self.obs_dim, self.act_dim, cfg.model).to(device)
        self.model_trainer = EnsembleTrainer(self.model, cfg.model)
        self.model_buffer = ReplayBuffer(self.obs_dim, self.act_dim, 1, device)

    # --- model ---
    def fit_model(self) -> Dict[str, float]:
        obs, act, rew, next_obs, _ = self.real_buffer.all()
        inputs = torch.cat([obs, act], dim=-1)
        targets = torch.cat([rew[:, None], next_obs - obs], dim=-1)
        return self.model_trainer.fit(inputs, targets)

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        self.model_buffer.resize(model_buffer_capacity)
        start_obs = self.real_buffer.sample(num_start_states)[0]
        return branched_rollout(self.model, self.agent.policy, start_obs, rollout_length,
                                self.termination, self.model_buffer)

    # --- agent ---
    def sample_batch(self, batch_size: int, real_ratio: float):
        return sample_mixed(self.real_buffer, self.model_buffer, batch_size, real_ratio)

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "model": self.model.state_dict(),
                "model_trainer": self.model_trainer.state_dict(),
                "model_buffer": self.model_buffer.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model.load_state_dict(state["model"])
        self.model_trainer.load_state_dict(state["model_trainer"])
        self.model_buffer.load_state_dict(state["model_buffer"])
