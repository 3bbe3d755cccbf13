"""PETS (Chua et al. 2018): probabilistic ensemble + trajectory sampling + CEM model-predictive
control (docs/baselines.md), as an ``Algorithm``.

Model and planner. The project's ``ProbabilisticEnsemble`` fitted by ``EnsembleTrainer`` (the
"pets" algo preset makes it 5 members, all elites), with the ensemble's reward head as the
planner's reward; CEM (``mbpo_ray.planning.CEMOptimizer``) over plans whose cost comes from
trajectory sampling in the learned model (``mbpo_ray.planning.trajectory_sampling``: the cost of
a plan, the three propagation schemes and how termination and non-finite predictions count).

Training. ``pets.random_episodes`` uniform-random episodes, then alternately a model refit on
all real data (``EnsembleTrainer.fit_buffer``) and one planner episode. The refit runs at the
start of the step that begins the planner episode, so a run that ends on an episode boundary
does not fit a model it never uses. CEM's warm-start plan is reset at every episode start.
All of D_env is kept; time-limit truncation is not terminal.

Evaluation convention. The planner is PETS's policy and acts without exploration noise, so the
``eval/`` record of an epoch is computed from the planner episodes that finished in that epoch
(as the PETS paper reports its returns); a separate eval episode each epoch would double the
cost of a run. ``eval/episodes`` counts those episodes. If none finished in the epoch, the last
finished planner episode is repeated with ``eval/episodes`` 0; before any planner episode has
finished, the random episodes' returns stand in (``eval/episodes`` 0), and before any episode at
all has finished, the running episode's return so far.

Metrics per epoch (every ``mbpo.epoch_length`` env steps and at ``total_steps``): env_steps,
epoch, eval/* as above, train/episode_return and train/episodes (all episodes finished in the
epoch, random ones included), train/plan_cost (mean over the epoch's planner steps of the final
CEM iteration's mean elite cost, i.e. minus the predicted horizon return), train/plan_iterations
(CEM iterations run per step), model/* (the latest fit) and model/fits (fits in this epoch),
perf/sps, perf/epoch_seconds, perf/plan_seconds, perf/model_seconds, perf/env_seconds,
perf/plan_seconds_per_step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.algos.records import EpochTimer, epoch_record
from mbpo_ray.envs import TrainingEnv, make_termination
from mbpo_ray.evaluation import eval_record
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.termination import LearnedTermination
from mbpo_ray.planning import CEMOptimizer
from mbpo_ray.planning.trajectory_sampling import TrajectorySampler

TIMED = ("plan", "model", "env")


@dataclass
class PETSState:
    """The loop's position and bookkeeping (plain Python, saved with ``asdict``)."""

    env_steps: int = 0
    episodes: int = 0  # finished episodes, random ones included
    fit_pending: bool = False
    model_metrics: Dict[str, float] = field(default_factory=dict)
    random_steps: int = 0  # env steps of the uniform-random episodes (PETS's warm-up)
    random_returns: List[float] = field(default_factory=list)
    random_lengths: List[int] = field(default_factory=list)
    last_planner_return: Optional[float] = None
    last_planner_length: Optional[int] = None
    last_eval: Optional[float] = None
    # this epoch
    epoch_returns: List[float] = field(default_factory=list)
    planner_returns: List[float] = field(default_factory=list)
    planner_lengths: List[int] = field(default_factory=list)
    fits: int = 0
    plan_steps: int = 0
    plan_cost_sum: float = 0.0
    plan_iterations_sum: int = 0


class PETS:
    def __init__(self, cfg: TrainConfig, device, run_path=None):
        self.cfg, self.device = cfg, torch.device(device)
        p = cfg.pets
        self.title = f"PETS ({p.propagation})"
        self.train_env = TrainingEnv(cfg.env_id, cfg.seed, cfg.env_kwargs)
        self.obs_dim, self.act_dim = self.train_env.obs_dim, self.train_env.act_dim

        self.model = ProbabilisticEnsemble(self.obs_dim, self.act_dim, cfg.model).to(self.device)
        self.model_trainer = EnsembleTrainer(self.model, cfg.model)
        self.buffer = ReplayBuffer(self.obs_dim, self.act_dim, cfg.total_steps, self.device)
        # mbpo.termination (docs/termination.md); a learned rule is fit right after the ensemble
        termination = make_termination(cfg, self.obs_dim, self.device)
        self.learned_termination = termination if isinstance(termination, LearnedTermination) else None
        self.sampler = TrajectorySampler(self.model, termination, p.propagation, p.num_particles, p.nan_cost)
        self.planner = CEMOptimizer(p.horizon, self.act_dim, p.population, p.num_elites, p.iterations,
                                    p.smoothing, p.min_variance, -1.0, 1.0, self.device)
        self.state = PETSState()
        self.timer = EpochTimer(TIMED, 0)
        self._plan_calls = 0  # timed planner steps (st.plan_steps also counts steps before a resume)

    # --- Algorithm interface ---
    @property
    def env_steps(self) -> int:
        return self.state.env_steps

    @property
    def last_eval(self) -> Optional[float]:
        return self.state.last_eval

    def step(self) -> Optional[Dict[str, Any]]:
        cfg, st = self.cfg, self.state
        if st.fit_pending:
            st.model_metrics = self.timer.timed("model", self.fit_model)
            st.fit_pending = False
            st.fits += 1
        planning = st.episodes >= cfg.pets.random_episodes
        if planning:
            action = self.timer.timed("plan", self.plan)
            self._plan_calls += 1
        else:
            action = self.train_env.random_action()
        self.timer.timed("env", self._env_step, action, planning)
        if st.env_steps % cfg.mbpo.epoch_length == 0 or st.env_steps == cfg.total_steps:
            return self.end_epoch()
        return None

    # --- the pieces of a step ---
    def fit_model(self) -> Dict[str, float]:
        metrics = self.model_trainer.fit_buffer(self.buffer)
        if self.learned_termination is not None:
            _, _, _, next_obs, terminated = self.buffer.all()
            metrics.update(self.learned_termination.fit(next_obs, terminated))
        return metrics

    def plan(self) -> np.ndarray:
        """One CEM optimisation from the current real state: the action to take, in [-1, 1]."""
        obs = torch.as_tensor(self.train_env.obs, dtype=torch.float32, device=self.device)
        action, result = self.planner.act(lambda plans: self.sampler.cost(obs, plans))
        st = self.state
        st.plan_steps += 1
        st.plan_cost_sum += float(result.elite_cost)
        st.plan_iterations_sum += result.iterations
        return action.cpu().numpy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The planner's action from ``obs``, in [-1, 1], outside training (a video of the run:
        mbpo_ray.video.policy); ``reset_acting`` at each episode's start."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        action, _ = self.planner.act(lambda plans: self.sampler.cost(obs_t, plans))
        return action.cpu().numpy()

    def reset_acting(self) -> None:
        self.planner.reset()

    def _env_step(self, action: np.ndarray, planning: bool) -> None:
        st = self.state
        step = self.train_env.step(action)
        self.buffer.add(step.obs, step.action, step.reward, step.next_obs, step.terminated)
        st.env_steps += 1
        st.random_steps += not planning
        if step.finished is not None:
            episode_return, episode_length = step.finished
            st.epoch_returns.append(episode_return)
            if planning:
                st.planner_returns.append(episode_return)
                st.planner_lengths.append(episode_length)
                st.last_planner_return, st.last_planner_length = episode_return, episode_length
            else:
                st.random_returns.append(episode_return)
                st.random_lengths.append(episode_length)
            st.episodes += 1
            st.fit_pending = st.episodes >= self.cfg.pets.random_episodes
            self.planner.reset()

    # --- metrics ---
    def evaluation(self) -> Dict[str, float]:
        st = self.state
        if st.planner_returns:
            record = eval_record(st.planner_returns, st.planner_lengths)
            record["eval/episodes"] = len(st.planner_returns)
            return record
        if st.last_planner_return is not None:
            record = eval_record([st.last_planner_return], [st.last_planner_length])
        elif st.random_returns:
            record = eval_record(st.random_returns, st.random_lengths)
        else:  # no episode finished yet: the running one so far
            record = eval_record([self.train_env.episode_return], [self.train_env.episode_length])
        record["eval/episodes"] = 0
        return record

    def end_epoch(self) -> Dict[str, Any]:
        cfg, st = self.cfg, self.state
        evaluation = self.evaluation()
        st.last_eval = evaluation["eval/return_mean"]
        record = epoch_record(st.env_steps, cfg.mbpo.epoch_length, st.epoch_returns, st.random_steps)
        record.update(evaluation)
        if st.plan_steps:
            record["train/plan_cost"] = st.plan_cost_sum / st.plan_steps
            record["train/plan_iterations"] = st.plan_iterations_sum / st.plan_steps
        record.update(st.model_metrics)
        record["model/fits"] = st.fits
        plan_seconds = self.timer.seconds["plan"]
        record.update(self.timer.perf(st.env_steps))
        record["perf/plan_seconds_per_step"] = plan_seconds / max(self._plan_calls, 1)
        self._plan_calls = 0
        st.epoch_returns, st.planner_returns, st.planner_lengths = [], [], []
        st.fits = st.plan_steps = st.plan_iterations_sum = 0
        st.plan_cost_sum = 0.0
        return record

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        state = {
            "loop": asdict(self.state),
            "model": self.model.state_dict(),
            "model_trainer": self.model_trainer.state_dict(),
            "buffer": self.buffer.state_dict(),
            **self.train_env.state_dict(),
            "planner": self.planner.state_dict(),
        }
        if self.learned_termination is not None:
            state["learned_termination"] = self.learned_termination.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.state = PETSState(**state["loop"])
        self.model.load_state_dict(state["model"])
        self.model_trainer.load_state_dict(state["model_trainer"])
        self.buffer.load_state_dict(state["buffer"])
        # A resumed run may have been given more steps: D_env grows, it never drops data.
        self.buffer.resize(max(self.cfg.total_steps, self.buffer.capacity))
        self.train_env.load_state_dict(state)
        self.planner.load_state_dict(state["planner"])
        if self.learned_termination is not None:
            self.learned_termination.load_state_dict(state["learned_termination"])
        self.timer.restart(self.state.env_steps)
        self._plan_calls = 0

    def close(self) -> None:
        pass
