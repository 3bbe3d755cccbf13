"""PETS (Chua et al. 2018): probabilistic ensemble + trajectory sampling + CEM model-predictive
control (REFERENCE.md section 7), as an ``Algorithm``.

Model. The project's ``ProbabilisticEnsemble`` fitted by ``EnsembleTrainer`` (unchanged; the
"pets" algo preset makes it 5 members, all elites). It predicts [reward, delta_obs] for
(obs, action in [-1, 1]). The planner's reward is the ensemble's reward head: no per-env reward
function. Termination is ``mbpo_ray.envs.termination_fn(env_id)`` on predicted next states, as
in MBPO's rollouts: a terminated particle collects the reward of its terminating transition
and nothing after it (its state is frozen so it cannot turn non-finite later). A particle that
is still alive in a non-finite state (or gets a non-finite reward) makes its plan's cost
non-finite, hence ``pets.nan_cost``; where the termination rule itself declares non-finite
states terminal (InvertedPendulum, Hopper, Ant), such a particle just ends.

Cost of a plan. Each of ``num_particles`` particles starts at the current real state and
follows the plan for ``horizon`` steps; cost = mean over particles of minus the summed
predicted reward (discount 1); a non-finite cost becomes ``pets.nan_cost``. The whole
population x particles is one batch of rows (row = plan * particles + particle), one model
call per horizon step; ``forward_members`` computes for each row only its member.

Propagation (which member a particle uses, always among the model's elites):
  * ts-inf: each particle draws one member uniformly at random and keeps it for the whole
    plan. The draw is made per plan evaluation, i.e. afresh in every cost-function call (every
    CEM iteration) and independently for every plan of the population, as PETS does; within
    one evaluation a particle's member never changes along its trajectory. Next states are
    sampled from the member's Gaussian.
  * ts-1: every particle re-draws its member at every step; next states sampled likewise.
  In both TS variants the reward enters as the member's mean, not a sample: the Gaussian is
  diagonal, so the reward's noise is independent of the sampled next state and never feeds
  back into the trajectory; averaging it out leaves every plan's expected cost unchanged and
  only removes noise from the ranking of plans (with a +1 alive bonus, that noise would
  otherwise decide between plans that all survive).
  * expectation: no sampling at all. Particle j uses elite member j and propagates that
    member's mean prediction; only min(num_particles, num_elites) particles are computed,
    because further ones would repeat a member's deterministic trajectory (and weight it
    unevenly when num_particles is not a multiple of num_elites). The cost is then the
    average over the elites of their mean-prediction returns, deterministic given the plan.

Training. ``pets.random_episodes`` uniform-random episodes, then alternately a model refit on
all real data (as ``LocalRuntime.fit_model``) and one planner episode. The refit runs at the
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

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.envs import TerminationFn, get_env_state, make_env, set_env_state, termination_fn
from mbpo_ray.evaluation import eval_record
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.planning import CEMOptimizer
from mbpo_ray.runtime.local import ActionScaler

TIMED = ("plan", "model", "env")


class TrajectorySampler:
    """Batched cost of plans under the ensemble: ``cost(obs, plans [P, H, A]) -> [P]``."""

    def __init__(self, model: ProbabilisticEnsemble, termination: TerminationFn, propagation: str,
                 num_particles: int, nan_cost: float, generator: Optional[torch.Generator] = None):
        if propagation not in ("ts-inf", "ts-1", "expectation"):
            raise ValueError(f"propagation={propagation!r}: expected ts-inf, ts-1 or expectation")
        self.model, self.termination = model, termination
        self.propagation, self.num_particles, self.nan_cost = propagation, num_particles, nan_cost
        self.generator = generator

    @property
    def particles_per_plan(self) -> int:
        if self.propagation == "expectation":
            return min(self.num_particles, self.model.num_elites)
        return self.num_particles

    def member_schedule(self, num_plans: int, horizon: int) -> torch.Tensor:
        """Member index of every row at every step: [horizon, num_plans * particles_per_plan]."""
        elites = self.model.elite_idx
        n = self.particles_per_plan
        rows = num_plans * n
        if self.propagation == "expectation":
            members = elites[torch.arange(rows, device=elites.device) % n]
            return members.expand(horizon, rows)
        num_elites = elites.shape[0]
        if self.propagation == "ts-inf":
            draw = torch.randint(num_elites, (rows,), device=elites.device, generator=self.generator)
            return elites[draw].expand(horizon, rows)
        draw = torch.randint(num_elites, (horizon, rows), device=elites.device, generator=self.generator)
        return elites[draw]

    @torch.no_grad()
    def cost(self, obs: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
        """obs [obs_dim] (the real current state), plans [P, H, A] in [-1, 1] -> cost [P]."""
        num_plans, horizon, act_dim = plans.shape
        n = self.particles_per_plan
        rows = num_plans * n
        members = self.member_schedule(num_plans, horizon)
        actions = plans.unsqueeze(1).expand(num_plans, n, horizon, act_dim).reshape(rows, horizon, act_dim)
        state = obs.reshape(1, -1).expand(rows, -1)
        total = torch.zeros(rows, device=plans.device)
        alive = torch.ones(rows, dtype=torch.bool, device=plans.device)
        for t in range(horizon):
            act = actions[:, t]
            mean, logvar = self.model.forward_members(torch.cat([state, act], dim=-1), members[t])
            delta, reward = mean[:, 1:], mean[:, 0]
            if self.propagation != "expectation":
                delta = delta + torch.randn_like(delta) * (0.5 * logvar[:, 1:]).exp()
            next_state = state + delta
            # where, not multiply: a dead particle's NaN must not reach the sum
            total = total + torch.where(alive, reward, torch.zeros_like(reward))
            alive = alive & ~self.termination(state, act, next_state)
            # A live particle in a non-finite state makes its plan's cost non-finite (nan_cost)
            # even when its next reward happens to be finite.
            broken = alive & ~torch.isfinite(next_state).all(dim=-1)
            total = torch.where(broken, torch.full_like(total, float("nan")), total)
            state = torch.where(alive[:, None], next_state, state)
        cost = -total.view(num_plans, n).mean(dim=1)
        return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, self.nan_cost))


@dataclass
class PETSState:
    """The loop's position and bookkeeping (plain Python, saved with ``asdict``)."""

    env_steps: int = 0
    episodes: int = 0  # finished episodes, random ones included
    episode_return: float = 0.0
    episode_length: int = 0
    fit_pending: bool = False
    model_metrics: Dict[str, float] = field(default_factory=dict)
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
        self.env = make_env(cfg.env_id, seed=cfg.seed)
        self.obs, _ = self.env.reset(seed=cfg.seed)
        self.obs_dim = self.env.observation_space.shape[0]
        self.act_dim = self.env.action_space.shape[0]
        self.scaler = ActionScaler(self.env.action_space)
        self.action_rng = np.random.default_rng(cfg.seed)

        self.model = ProbabilisticEnsemble(self.obs_dim, self.act_dim, cfg.model).to(self.device)
        self.model_trainer = EnsembleTrainer(self.model, cfg.model)
        self.buffer = ReplayBuffer(self.obs_dim, self.act_dim, cfg.total_steps, self.device)
        self.sampler = TrajectorySampler(self.model, termination_fn(cfg.env_id), p.propagation,
                                         p.num_particles, p.nan_cost)
        self.planner = CEMOptimizer(p.horizon, self.act_dim, p.population, p.num_elites, p.iterations,
                                    p.smoothing, p.min_variance, -1.0, 1.0, self.device)
        self.state = PETSState()
        self._start_epoch_clock()

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
            st.model_metrics = self._timed("model", self.fit_model)
            st.fit_pending = False
            st.fits += 1
        planning = st.episodes >= cfg.pets.random_episodes
        if planning:
            action = self._timed("plan", self.plan)
            self._plan_calls += 1
        else:
            action = self.action_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        self._timed("env", self._env_step, action, planning)
        if st.env_steps % cfg.mbpo.epoch_length == 0 or st.env_steps == cfg.total_steps:
            return self.end_epoch()
        return None

    # --- the pieces of a step ---
    def fit_model(self) -> Dict[str, float]:
        obs, act, rew, next_obs, _ = self.buffer.all()
        inputs = torch.cat([obs, act], dim=-1)
        targets = torch.cat([rew[:, None], next_obs - obs], dim=-1)
        return self.model_trainer.fit(inputs, targets)

    def plan(self) -> np.ndarray:
        """One CEM optimisation from the current real state: the action to take, in [-1, 1]."""
        obs = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)
        action, result = self.planner.act(lambda plans: self.sampler.cost(obs, plans))
        st = self.state
        st.plan_steps += 1
        st.plan_cost_sum += float(result.elite_cost)
        st.plan_iterations_sum += result.iterations
        return action.cpu().numpy()

    def _env_step(self, action: np.ndarray, planning: bool) -> None:
        st = self.state
        next_obs, reward, terminated, truncated, _ = self.env.step(self.scaler.to_env(action))
        # Time-limit truncation is not terminal: only `terminated` is stored.
        self.buffer.add(self.obs, action, reward, next_obs, terminated)
        st.episode_return += float(reward)
        st.episode_length += 1
        st.env_steps += 1
        self.obs = next_obs
        if terminated or truncated:
            st.epoch_returns.append(st.episode_return)
            if planning:
                st.planner_returns.append(st.episode_return)
                st.planner_lengths.append(st.episode_length)
                st.last_planner_return, st.last_planner_length = st.episode_return, st.episode_length
            else:
                st.random_returns.append(st.episode_return)
                st.random_lengths.append(st.episode_length)
            st.episodes += 1
            st.fit_pending = st.episodes >= self.cfg.pets.random_episodes
            self.obs, _ = self.env.reset()
            st.episode_return, st.episode_length = 0.0, 0
            self.planner.reset()

    def _timed(self, phase: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self._timers[phase] += time.perf_counter() - t0
        return out

    def _start_epoch_clock(self) -> None:
        self._timers = dict.fromkeys(TIMED, 0.0)
        self._plan_calls = 0  # timed planner steps (st.plan_steps also counts steps before a resume)
        self._epoch_start, self._epoch_start_step = time.perf_counter(), self.state.env_steps

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
            record = eval_record([st.episode_return], [st.episode_length])
        record["eval/episodes"] = 0
        return record

    def end_epoch(self) -> Dict[str, Any]:
        cfg, st = self.cfg, self.state
        evaluation = self.evaluation()
        st.last_eval = evaluation["eval/return_mean"]
        wall = time.perf_counter() - self._epoch_start
        steps = st.env_steps - self._epoch_start_step
        record: Dict[str, Any] = {"env_steps": st.env_steps,
                                  "epoch": (st.env_steps - 1) // cfg.mbpo.epoch_length}
        record.update(evaluation)
        if st.epoch_returns:
            record["train/episode_return"] = float(np.mean(st.epoch_returns))
            record["train/episodes"] = len(st.epoch_returns)
        if st.plan_steps:
            record["train/plan_cost"] = st.plan_cost_sum / st.plan_steps
            record["train/plan_iterations"] = st.plan_iterations_sum / st.plan_steps
        record.update(st.model_metrics)
        record["model/fits"] = st.fits
        record["perf/sps"] = steps / max(wall, 1e-9)
        record["perf/epoch_seconds"] = wall
        record.update({f"perf/{phase}_seconds": secs for phase, secs in self._timers.items()})
        record["perf/plan_seconds_per_step"] = self._timers["plan"] / max(self._plan_calls, 1)
        st.epoch_returns, st.planner_returns, st.planner_lengths = [], [], []
        st.fits = st.plan_steps = st.plan_iterations_sum = 0
        st.plan_cost_sum = 0.0
        self._start_epoch_clock()
        return record

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        return {
            "loop": asdict(self.state),
            "model": self.model.state_dict(),
            "model_trainer": self.model_trainer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "env": get_env_state(self.env),
            "obs": np.array(self.obs),
            "planner": self.planner.state_dict(),
            "action_rng": self.action_rng.bit_generator.state,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.state = PETSState(**state["loop"])
        self.model.load_state_dict(state["model"])
        self.model_trainer.load_state_dict(state["model_trainer"])
        self.buffer.load_state_dict(state["buffer"])
        # A resumed run may have been given more steps: D_env grows, it never drops data.
        self.buffer.resize(max(self.cfg.total_steps, self.buffer.capacity))
        set_env_state(self.env, state["env"])
        self.obs = state["obs"]
        self.planner.load_state_dict(state["planner"])
        self.action_rng.bit_generator.state = state["action_rng"]
        self._start_epoch_clock()

    def close(self) -> None:
        pass
