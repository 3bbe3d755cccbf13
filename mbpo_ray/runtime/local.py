"""Runtimes that keep everything of one run in this process."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from mbpo_ray.agents.metrics import MetricMean
from mbpo_ray.agents.sac import SAC
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer, d_env_capacity, sample_mixed
from mbpo_ray.live_metrics import BehaviorLog, elite_mse
from mbpo_ray.envs import TrainingEnv, make_env, make_termination
from mbpo_ray.evaluation import evaluate_policy
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.rollout import branched_rollout, make_rollout_uncertainty
from mbpo_ray.models.targets import fit_data_from_buffer
from mbpo_ray.models.termination import LearnedTermination
from mbpo_ray.precision import autocast, choose_precision
from mbpo_ray.runtime.base import AgentBuilder


def default_agent(obs_dim: int, act_dim: int, cfg: TrainConfig, device: torch.device) -> SAC:
    return SAC(obs_dim, act_dim, cfg.sac, device)


class AgentRuntime:
    """The env, D_env, an agent (SAC unless ``make_agent`` says otherwise) and evaluation, all in
    this process: the part of the Runtime interface that needs no dynamics model. Used as it is
    for algorithms whose loop adds no model data (real_ratio 1); ``LocalRuntime`` adds MBPO's
    model, D_model and rollouts."""

    def __init__(self, cfg: TrainConfig, device: torch.device, make_agent: Optional[AgentBuilder] = None):
        self.cfg, self.device = cfg, device
        self.precision = choose_precision(cfg.precision, device)  # float32 or bf16 (mbpo_ray.precision)
        self.train_env = TrainingEnv(cfg.env_id, cfg.seed, cfg.env_kwargs)
        self.eval_env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
        self.obs_dim, self.act_dim = self.train_env.obs_dim, self.train_env.act_dim
        self.scaler = self.train_env.scaler

        self.agent = (make_agent or default_agent)(self.obs_dim, self.act_dim, cfg, device)
        self.real_buffer = ReplayBuffer(self.obs_dim, self.act_dim, d_env_capacity(cfg), device)
        self.metrics = MetricMean(self.agent.metric_names, device)

    # --- env ---
    def env_step(self, random_action: bool) -> Optional[float]:
        env = self.train_env
        if random_action:
            action = env.random_action()
        else:
            obs_t = torch.as_tensor(env.obs, dtype=torch.float32, device=self.device)[None]
            action = self.policy_action(obs_t)[0].cpu().numpy()
        step = env.step(action)
        row = self.real_buffer.layout.pack_numpy(step.obs, step.action, step.reward, step.next_obs, step.terminated)
        row = torch.as_tensor(row, device=self.device)[None]
        self.real_buffer.add_rows(row)
        obs, _, rew, next_obs, _ = self.real_buffer.layout.split(row)
        self.agent.observe(obs, rew, next_obs)
        return None if step.finished is None else step.finished[0]

    def policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The agent's sampled action at the training env's state obs [1, obs_dim]."""
        return self.agent.policy.act(obs)

    def real_size(self) -> int:
        return len(self.real_buffer)

    def close(self) -> None:
        """Nothing outside this process to release."""

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
            batch = self.sample_batch(batch_size, real_ratio)
            with autocast(self.device, self.precision):
                self.add_agent_metrics(self.agent.update(*batch))

    def reset_agent(self) -> None:
        self.agent.reset_networks()

    def reset_model(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no dynamics model to reset (mbpo.real_ratio must be 1)")

    def add_agent_metrics(self, metrics: torch.Tensor) -> None:
        """One update's metrics (the agent's ``metric_names`` order) into this epoch's means."""
        self.metrics.add(metrics)

    def agent_metrics(self) -> Dict[str, float]:
        return self.metrics.read()

    def runtime_metrics(self) -> Dict[str, float]:
        return {}

    def diagnostic_metrics(self) -> Dict[str, float]:
        """No model, no diagnostics (docs/diagnostics.md#live-metrics)."""
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
            **self.train_env.state_dict(),
            **self.metrics.state_dict(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.agent.load_full_state_dict(state["agent"])
        self.real_buffer.load_state_dict(state["real_buffer"])
        # A resumed run may have been given more steps: D_env grows, it never drops data.
        self.real_buffer.resize(max(d_env_capacity(self.cfg), self.real_buffer.capacity))
        self.train_env.load_state_dict(state)
        self.metrics.load_state_dict(state)


class LocalRuntime(AgentRuntime):
    """Everything of an MBPO run in this process: env, D_env, D_model, ensemble, SAC. Also a
    ``StackableRuntime`` (mbpo_ray.runtime.base): a seed group stacks its seeds' updates and fits."""

    def __init__(self, cfg: TrainConfig, device: torch.device, make_agent: Optional[AgentBuilder] = None):
        super().__init__(cfg, device, make_agent)
        self.model = ProbabilisticEnsemble(self.obs_dim, self.act_dim, cfg.model).to(device)
        self.model_trainer = EnsembleTrainer(self.model, cfg.model)
        self.model_buffer = ReplayBuffer(self.obs_dim, self.act_dim, 1, device)
        # mbpo.termination (docs/termination.md); a learned rule is fit right after the ensemble
        self.termination = make_termination(cfg, self.obs_dim, device)
        self.learned_termination = self.termination if isinstance(self.termination, LearnedTermination) else None
        # The live diagnostics (docs/diagnostics.md#live-metrics): the policy's Gaussian at each
        # step it acted (for rollout/policy_kl), and the real steps since the last fit (for
        # model/new_data_mse). Only where rollouts use the policy (real_ratio < 1).
        self.behavior = BehaviorLog(self.obs_dim, self.act_dim, device=device) if cfg.mbpo.real_ratio < 1 else None
        self.steps_since_fit, self.model_fitted = 0, False
        self.rollout_uncertainty = make_rollout_uncertainty(cfg.mbpo)  # MBPO+ (docs/mbpo_plus.md)

    # --- env ---
    def env_step(self, random_action: bool) -> Optional[float]:
        self.steps_since_fit += 1
        return super().env_step(random_action)

    def policy_action(self, obs: torch.Tensor) -> torch.Tensor:
        if self.behavior is None:
            return super().policy_action(obs)
        action, mean, log_std = self.agent.policy.act_and_gaussian(obs)
        self.behavior.add(obs, mean, log_std)
        return action

    # --- model ---
    def fit_model(self) -> Dict[str, float]:
        new_data = self.new_data_mse()
        with autocast(self.device, self.precision):
            metrics = self.model_trainer.fit(*self.fit_data())
        return self.model_fit_done(metrics, new_data)

    def reset_model(self) -> None:
        self.model_trainer.reset()

    def fit_data(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """D_env as the ensemble fits it: (inputs, targets), every stored transition."""
        return fit_data_from_buffer(self.real_buffer)

    def model_fit_done(self, metrics: Dict[str, float], new_data: Optional[float]) -> Dict[str, float]:
        """After the ensemble's fit (here, or a seed group's stacked fit, mbpo_ray.seed_group):
        the learned termination's fit and the fit's bookkeeping; ``new_data`` is what
        ``new_data_mse`` said before the fit. Returns the fit's metrics."""
        if self.learned_termination is not None:
            _, _, _, next_obs, terminated = self.real_buffer.all()
            with autocast(self.device, self.precision):
                metrics.update(self.learned_termination.fit(next_obs, terminated))
        if new_data is not None:
            metrics["model/new_data_mse"] = new_data
        self.steps_since_fit, self.model_fitted = 0, True
        return metrics

    def new_data_mse(self) -> Optional[float]:
        """The current model's error on the real transitions added since it was fit (None before
        the first fit or when there are none)."""
        n = min(self.steps_since_fit, len(self.real_buffer))
        if not self.model_fitted or n == 0:
            return None
        return elite_mse(self.model, self.real_buffer.rows_in_order()[-n:], self.real_buffer.layout)

    def diagnostic_metrics(self) -> Dict[str, float]:
        kl = self.behavior.take_kl(self.agent.policy) if self.behavior is not None else None
        return {} if kl is None else {"rollout/policy_kl": kl}

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        self.model_buffer.resize(model_buffer_capacity)
        start_obs = self.real_buffer.sample(num_start_states)[0]
        with autocast(self.device, self.precision):
            return branched_rollout(self.model, self.agent.policy, start_obs, rollout_length,
                                    self.termination, self.model_buffer, self.rollout_uncertainty)

    # --- agent ---
    def sample_batch(self, batch_size: int, real_ratio: float):
        return sample_mixed(self.real_buffer, self.model_buffer, batch_size, real_ratio)

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        state = {**super().state_dict(), "model": self.model.state_dict(),
                 "model_trainer": self.model_trainer.state_dict(),
                 "model_buffer": self.model_buffer.state_dict()}
        if self.learned_termination is not None:
            state["learned_termination"] = self.learned_termination.state_dict()
        if self.rollout_uncertainty is not None:
            state["rollout_uncertainty"] = self.rollout_uncertainty.state_dict()
        state["diagnostics"] = {"steps_since_fit": self.steps_since_fit, "model_fitted": self.model_fitted}
        if self.behavior is not None:
            state["diagnostics"]["behavior"] = self.behavior.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.model.load_state_dict(state["model"])
        self.model_trainer.load_state_dict(state["model_trainer"])
        self.model_buffer.load_state_dict(state["model_buffer"])
        if self.learned_termination is not None:
            self.learned_termination.load_state_dict(state["learned_termination"])
        if self.rollout_uncertainty is not None and "rollout_uncertainty" in state:
            self.rollout_uncertainty.load_state_dict(state["rollout_uncertainty"])
        # checkpoints written before the live diagnostics: they start afresh
        diagnostics = state.get("diagnostics", {})
        self.steps_since_fit = diagnostics.get("steps_since_fit", 0)
        self.model_fitted = diagnostics.get("model_fitted", False)
        if self.behavior is not None and "behavior" in diagnostics:
            self.behavior.load_state_dict(diagnostics["behavior"])
