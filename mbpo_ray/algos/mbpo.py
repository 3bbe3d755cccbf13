"""The MBPO loop (Janner et al. 2019, Algorithm 2), written against the Runtime interface.

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

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import model_buffer_capacity
from mbpo_ray.rollout import rollout_length
from mbpo_ray.runtime.base import Runtime

PHASES = ("env", "model", "rollout", "sac", "eval")


@dataclass
class LoopState:
    env_steps: int = 0
    episode_returns: List[float] = field(default_factory=list)  # finished in this epoch
    model_metrics: Dict[str, float] = field(default_factory=dict)
    rollout_metrics: Dict[str, float] = field(default_factory=dict)
    last_eval: Optional[float] = None
    # Bookkeeping of schedules other than the step-by-step one (the Ray runtime's async loop).
    schedule: Dict[str, Any] = field(default_factory=dict)


class MBPOLoop:
    def __init__(self, cfg: TrainConfig, runtime: Runtime, state: Optional[LoopState] = None):
        self.cfg, self.runtime = cfg, runtime
        self.state = state or LoopState()
        b = cfg.mbpo
        self.rollout_freq = b.rollout_freq or b.model_train_freq
        self.start_states_per_rollout = max(1, b.rollout_batch_size * self.rollout_freq // b.model_train_freq)
        self.uses_model = b.real_ratio < 1.0
        self._timers = dict.fromkeys(PHASES, 0.0)
        self._epoch_start = time.perf_counter()
        self._epoch_start_step = self.state.env_steps

    def _timed(self, phase: str, fn: Callable, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self._timers[phase] += time.perf_counter() - t0
        return out

    def epoch(self, env_steps: Optional[int] = None) -> int:
        return (self.state.env_steps if env_steps is None else env_steps) // self.cfg.mbpo.epoch_length

    def rollout_length(self) -> int:
        # The released code counts the k schedule's epochs from the end of the random warm-up
        # (its initial exploration runs before epoch 0), so Hopper's ramp starts at 5k + 20k steps.
        b = self.cfg.mbpo
        training_epoch = max(0, self.state.env_steps - b.init_random_steps) // b.epoch_length
        return rollout_length(training_epoch, b.rollout_schedule)

    def step(self) -> Optional[Dict[str, Any]]:
        """One env step with everything the schedule puts before and after it. Returns the
        epoch's metrics record when this step ended an epoch (or the run)."""
        cfg, b, rt, st = self.cfg, self.cfg.mbpo, self.runtime, self.state
        t = st.env_steps
        since_warmup = t - b.init_random_steps
        if since_warmup >= 0 and self.uses_model:
            if since_warmup % b.model_train_freq == 0:
                st.model_metrics = self._timed("model", rt.fit_model)
            if since_warmup % self.rollout_freq == 0:
                k = self.rollout_length()
                capacity = model_buffer_capacity(b.model_retain_epochs, b.epoch_length,
                                                 b.model_train_freq, b.rollout_batch_size, k)
                st.rollout_metrics = self._timed("rollout", rt.generate_rollouts,
                                                 self.start_states_per_rollout, k, capacity)
        finished = self._timed("env", rt.env_step, since_warmup < 0)
        if finished is not None:
            st.episode_returns.append(finished)
        st.env_steps += 1
        if since_warmup >= 0 and rt.real_size() >= b.min_real_before_updates:
            self._timed("sac", rt.update_agent, b.updates_per_step, b.real_ratio)
        if st.env_steps % b.epoch_length == 0 or st.env_steps == cfg.total_steps:
            return self.end_epoch()
        return None

    def end_epoch(self) -> Dict[str, Any]:
        cfg, st = self.cfg, self.state
        eval_seed = 1_000_000 + cfg.seed * 10_000 + self.epoch(st.env_steps - 1) * cfg.eval_episodes
        evaluation = self._timed("eval", self.runtime.evaluate, cfg.eval_episodes, eval_seed)
        st.last_eval = evaluation["eval/return_mean"]
        wall = time.perf_counter() - self._epoch_start
        steps = st.env_steps - self._epoch_start_step
        record: Dict[str, Any] = {"env_steps": st.env_steps, "epoch": self.epoch(st.env_steps - 1)}
        if st.episode_returns:
            record["train/episode_return"] = float(np.mean(st.episode_returns))
            record["train/episodes"] = len(st.episode_returns)
        record.update(self.runtime.agent_metrics())
        record.update(st.model_metrics)
        record.update(st.rollout_metrics)
        record.update(evaluation)
        record.update(self.runtime.runtime_metrics())
        record["perf/sps"] = steps / max(wall, 1e-9)
        record["perf/epoch_seconds"] = wall
        record.update({f"perf/{phase}_seconds": secs for phase, secs in self._timers.items()})
        st.episode_returns = []
        self._timers = dict.fromkeys(PHASES, 0.0)
        self._epoch_start, self._epoch_start_step = time.perf_counter(), st.env_steps
        return record

    def state_dict(self) -> Dict[str, Any]:
        return asdict(self.state)

    @staticmethod
    def state_from_dict(d: Dict[str, Any]) -> LoopState:
        return LoopState(**d)


class MBPO:
    """MBPO (and, with ``algo: sac``, the same SAC without model data) as an ``Algorithm``:
    the loop above over a runtime."""

    def __init__(self, cfg: TrainConfig, device, run_path=None):
        self.cfg = cfg
        self.title = "SAC" if cfg.algo == "sac" else "MBPO"
        self.runtime, self.loop_class = self.make_runtime(cfg, device)
        self.loop = self.loop_class(cfg, self.runtime)

    def make_runtime(self, cfg: TrainConfig, device):
        """The runtime the loop runs over, and the loop class (the step-by-step MBPOLoop, or
        the Ray runtime's overlapped one)."""
        if cfg.runtime == "ray":
            from mbpo_ray.runtime.ray_runtime import AsyncMBPOLoop, RayRuntime

            self.title += f" (ray, {cfg.ray.schedule})"
            return RayRuntime(cfg), (AsyncMBPOLoop if cfg.ray.schedule == "async" else MBPOLoop)
        from mbpo_ray.runtime.local import LocalRuntime

        return LocalRuntime(cfg, device), MBPOLoop

    @property
    def env_steps(self) -> int:
        return self.loop.state.env_steps

    @property
    def last_eval(self) -> Optional[float]:
        return self.loop.state.last_eval

    def step(self) -> Optional[Dict[str, Any]]:
        return self.loop.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"loop": self.loop.state_dict(), "runtime": self.runtime.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.runtime.load_state_dict(state["runtime"])
        self.loop = self.loop_class(self.cfg, self.runtime, self.loop_class.state_from_dict(state["loop"]))

    def close(self) -> None:
        close = getattr(self.runtime, "close", None)
        if close is not None:
            close()
