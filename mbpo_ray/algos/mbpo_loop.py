"""The MBPO loop (Janner et al. 2019, Algorithm 2), written against the ``Runtime`` interface.

Per env step t (after the uniform-random warm-up):
  * every model_train_freq steps: refit the ensemble on D_env;
  * every rollout_freq steps: branch rollouts of length k(epoch) from real states into D_model
    (resized to retain_epochs x rollouts per epoch x k);
  * one env step with the current policy into D_env;
  * G SAC updates on batches with real_ratio real data.
At each epoch end: evaluate the deterministic policy, log one metrics record, checkpoint.
The loop position is the env step counter alone, so a run can stop after any step and resume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from mbpo_ray.algos.records import EpochTimer, epoch_of, epoch_record, eval_seed
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import model_buffer_capacity
from mbpo_ray.models.rollout import rollout_length_at
from mbpo_ray.runtime.base import Runtime

PHASES = ("env", "model", "rollout", "sac", "eval")


@dataclass
class LoopState:
    """Where an MBPO loop is: what a checkpoint keeps of it."""

    env_steps: int = 0
    episode_returns: List[float] = field(default_factory=list)  # finished in this epoch
    model_metrics: Dict[str, float] = field(default_factory=dict)  # the last fit's
    rollout_metrics: Dict[str, float] = field(default_factory=dict)  # the last rollout batch's
    last_eval: Optional[float] = None
    model_resets: int = 0  # mbpo.model_reset_every's resets so far
    agent_resets: int = 0  # mbpo.agent_reset_every's resets so far


class LoopBase:
    """What the step-by-step and the overlapped schedule share: the rollout sizes, the epoch's
    record, the loop's state in a checkpoint. ``State``: the schedule's state class."""

    State = LoopState

    def __init__(self, cfg: TrainConfig, runtime: Runtime, state: Optional[LoopState] = None):
        self.cfg, self.runtime = cfg, runtime
        self.state = state or self.State()
        b = cfg.mbpo
        self.rollout_freq = b.rollout_freq or b.model_train_freq
        self.start_states_per_rollout = max(1, b.rollout_batch_size * self.rollout_freq // b.model_train_freq)
        self.uses_model = b.real_ratio < 1.0
        self._resets_done_at: Optional[int] = None  # the env step whose resets were done
        self.timer = EpochTimer(PHASES, self.state.env_steps)

    def rollout_length(self) -> int:
        return rollout_length_at(self.state.env_steps, self.cfg.mbpo)

    def model_buffer_capacity(self, k: int) -> int:
        b = self.cfg.mbpo
        return model_buffer_capacity(b.model_retain_epochs, b.epoch_length, b.model_train_freq,
                                     b.rollout_batch_size, k)

    def end_epoch(self) -> Dict[str, Any]:
        cfg, st = self.cfg, self.state
        seed = eval_seed(cfg.seed, epoch_of(st.env_steps, cfg.mbpo.epoch_length), cfg.eval_episodes)
        evaluation = self.timer.timed("eval", self.runtime.evaluate, cfg.eval_episodes, seed)
        st.last_eval = evaluation["eval/return_mean"]
        record = epoch_record(st.env_steps, cfg.mbpo.epoch_length, st.episode_returns, cfg.mbpo.init_random_steps)
        record.update(self.runtime.agent_metrics())
        record.update(st.model_metrics)
        record.update(st.rollout_metrics)
        if self.uses_model:
            record.update(self.runtime.diagnostic_metrics())
        record.update(evaluation)
        record.update(self.runtime.runtime_metrics())
        if cfg.mbpo.model_reset_every:
            record["model/resets"] = st.model_resets
        if cfg.mbpo.agent_reset_every:
            record["train/agent_resets"] = st.agent_resets
        record.update(self.timer.perf(st.env_steps))
        st.episode_returns = []
        return record

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self.state)

    @classmethod
    def state_from_dict(cls, d: Dict[str, Any]) -> LoopState:
        """The state of a checkpoint (also of the releases that kept the overlapped schedule's
        fields in a ``schedule`` dict)."""
        d = dict(d)
        d.update(d.pop("schedule", None) or {})
        names = {f.name for f in fields(cls.State)}
        return cls.State(**{k: v for k, v in d.items() if k in names})


class MBPOLoop(LoopBase):
    """The step-by-step schedule (the paper's Algorithm 2), over any ``Runtime``."""

    def step(self) -> Optional[Dict[str, Any]]:
        """One env step with everything the schedule puts before and after it. Returns the
        epoch's metrics record when this step ended an epoch (or the run)."""
        self.advance()
        if self.updates_due():
            b = self.cfg.mbpo
            self.timer.timed("sac", self.runtime.update_agent, b.updates_per_step, b.real_ratio)
        return self.finish_step()

    # The three parts of a step, apart so that a seed group (mbpo_ray.seed_group) can run the
    # agent updates of all its seeds as one stacked update between them (and their model fits as
    # one stacked fit before ``advance``).
    def fit_due(self) -> bool:
        """Whether the next step begins with a model fit."""
        since_warmup = self.state.env_steps - self.cfg.mbpo.init_random_steps
        return since_warmup >= 0 and self.uses_model and since_warmup % self.cfg.mbpo.model_train_freq == 0

    def reset_if_due(self) -> None:
        """MBPO+ resets (docs/mbpo_plus.md#resets) due at this step, once: on their period after the
        warm-up, before anything else of the step (the model's right before the fit due at the
        same step: its period is a multiple of the fit's). A seed group calls it before its
        stacked fit, so that each seed draws its numbers in the order it draws them alone."""
        b, st = self.cfg.mbpo, self.state
        if self._resets_done_at == st.env_steps:
            return
        self._resets_done_at = st.env_steps
        since_warmup = st.env_steps - b.init_random_steps
        if since_warmup > 0 and b.model_reset_every and since_warmup % b.model_reset_every == 0:
            self.timer.timed("model", self.runtime.reset_model)
            st.model_resets += 1
        if since_warmup > 0 and b.agent_reset_every and since_warmup % b.agent_reset_every == 0:
            self.timer.timed("sac", self.runtime.reset_agent)
            st.agent_resets += 1

    def advance(self, model_metrics: Optional[Dict[str, float]] = None) -> None:
        """The step up to its agent updates: the model fit and rollouts when due, one env step.
        ``model_metrics``: the fit that is due was done already (a seed group's stacked fit)."""
        b, rt, st, timed = self.cfg.mbpo, self.runtime, self.state, self.timer.timed
        since_warmup = st.env_steps - b.init_random_steps
        self.reset_if_due()
        if since_warmup >= 0 and self.uses_model:
            if self.fit_due():
                st.model_metrics = model_metrics if model_metrics is not None else timed("model", rt.fit_model)
            if since_warmup % self.rollout_freq == 0:
                k = self.rollout_length()
                st.rollout_metrics = timed("rollout", rt.generate_rollouts, self.start_states_per_rollout,
                                           k, self.model_buffer_capacity(k))
        finished = timed("env", rt.env_step, since_warmup < 0)
        if finished is not None:
            st.episode_returns.append(finished)
        st.env_steps += 1

    def updates_due(self) -> bool:
        """Whether the env step just taken is followed by ``mbpo.updates_per_step`` updates."""
        b = self.cfg.mbpo
        return self.state.env_steps > b.init_random_steps and self.runtime.real_size() >= b.min_real_before_updates

    def finish_step(self) -> Optional[Dict[str, Any]]:
        """After the updates: the epoch's record when the step ended an epoch (or the run)."""
        if self.state.env_steps % self.cfg.mbpo.epoch_length == 0 or self.state.env_steps == self.cfg.total_steps:
            return self.end_epoch()
        return None
