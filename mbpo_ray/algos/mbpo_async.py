"""MBPO with collection, model fitting, rollouts and SAC updates overlapped, over an
``AsyncRuntime`` (the Ray runtime's ``ray.schedule: async``).

The same quantities as the step-by-step loop (``mbpo_loop``), decoupled in time:
  * collectors step in chunks of ``ray.collector_chunk`` env steps, each with the newest
    policy the learner has published when the chunk starts;
  * once ``mbpo.model_train_freq`` more env steps have arrived, the model is refit (in the
    background);
  * rollouts of length k(epoch) are branched from real states into D_model at the step-by-step
    loop's rollout points (every ``mbpo.rollout_freq`` env steps after the warm-up), with the
    newest published model: a point passed while a fit or earlier rollouts run is made up when
    they end, so a run makes as many model transitions as the step-by-step loop;
  * the learner runs SAC updates in chunks of ``ray.learner_chunk``. The rate limiter is
    cumulative: the learner may start a chunk while its total updates stay at most
    ``max_updates_per_step`` x env steps since updates began (the step-by-step loop's first
    update step: after the warm-up, once D_env holds ``mbpo.min_real_before_updates``
    transitions), and, once D_env holds that many, the collectors are held back while the total
    falls below ``min_updates_per_step`` x those env steps, less one chunk per collector of slack.
At each epoch boundary the record is written as in the step-by-step loop, with the achieved
update ratio (this epoch's and the run's) under perf/.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from mbpo_ray.algos.mbpo_loop import LoopBase, LoopState
from mbpo_ray.config import TrainConfig
from mbpo_ray.runtime.base import AsyncRuntime, Job


@dataclass
class OverlappedState(LoopState):
    """The overlapped schedule's state: the step-by-step loop's, and its own bookkeeping."""

    updates: int = 0                        # SAC updates made so far
    next_fit_at: Optional[int] = None       # env steps at which the next model fit is due
    next_rollout_at: Optional[int] = None   # env steps at which the next rollout point is
    model_published: Optional[bool] = None  # whether a fit has been published (rollouts wait for one)


class AsyncMBPOLoop(LoopBase):
    State = OverlappedState

    def __init__(self, cfg: TrainConfig, runtime: AsyncRuntime, state: Optional[OverlappedState] = None):
        super().__init__(cfg, runtime, state)
        r, b, st = cfg.ray, cfg.mbpo, self.state
        self.max_ratio = b.updates_per_step if r.max_updates_per_step is None else r.max_updates_per_step
        self.min_ratio = self.max_ratio if r.min_updates_per_step is None else r.min_updates_per_step
        # the step-by-step loop updates after env step t once t > init_random_steps and D_env
        # holds min_real_before_updates rows (t rows): its updates so far are G x (t - this)
        self.updates_from = max(b.init_random_steps, b.min_real_before_updates - 1)
        if st.next_fit_at is None:
            st.next_fit_at = b.init_random_steps
        if st.next_rollout_at is None:
            st.next_rollout_at = self.first_rollout_point(st.env_steps)
        if st.model_published is None:  # a checkpoint of a release that did not record it
            st.model_published = bool(st.model_metrics)
        self.jobs: List[Job] = []                 # started, not yet waited for
        self.launched_steps = st.env_steps        # env steps handed to collectors so far
        self.idle_collectors = set(range(runtime.num_collectors))
        self.last_launch: Dict[int, int] = {}     # collectors take turns
        self.rollout_parts: List[Dict[str, Any]] = []
        self.epoch_updates_start = (st.updates, st.env_steps)
        self.epoch_wait_seconds = 0.0

    def busy(self, kind: str) -> bool:
        return any(job.kind == kind for job in self.jobs)

    def steps_with_updates(self, steps: int) -> int:
        """Env steps after which the step-by-step loop would have made updates."""
        return max(0, steps - self.updates_from)

    def first_rollout_point(self, steps: int) -> int:
        """The first of the step-by-step loop's rollout points at or after ``steps``."""
        start, every = self.cfg.mbpo.init_random_steps, self.rollout_freq
        return start if steps <= start else start + -(-(steps - start) // every) * every

    def start_due_rollouts(self) -> None:
        """Rollouts for every rollout point passed (before the run's last step), with the newest
        published model, unless a fit or rollouts are running (they come back here when done)."""
        st = self.state
        if not self.uses_model or not st.model_published or self.busy("fit") or self.busy("rollout"):
            return
        points = 0
        while st.next_rollout_at <= st.env_steps and st.next_rollout_at < self.cfg.total_steps:
            st.next_rollout_at += self.rollout_freq
            points += 1
        if points:
            k = self.rollout_length()
            self.rollout_parts = []
            self.jobs.extend(self.runtime.start_rollouts(points * self.start_states_per_rollout, k,
                                                         self.model_buffer_capacity(k)))

    # --- what may start now ---
    def launch(self) -> None:
        cfg, b, rt, st = self.cfg, self.cfg.mbpo, self.runtime, self.state
        # a model refit once its env steps have arrived (the step-by-step loop's last fit comes
        # before its last env step), and rollouts at the rollout points passed
        if self.uses_model and not self.busy("fit") and not self.busy("rollout") \
                and st.next_fit_at <= st.env_steps and st.next_fit_at < cfg.total_steps:
            while st.next_fit_at <= st.env_steps:
                st.next_fit_at += b.model_train_freq
            self.jobs.append(rt.start_fit())
        self.start_due_rollouts()
        # SAC updates, up to the upper bound of the rate limiter
        owed = int(self.max_ratio * self.steps_with_updates(st.env_steps)) - st.updates
        if (not self.busy("update") and owed >= 1 and st.env_steps > b.init_random_steps
                and rt.real_size() >= b.min_real_before_updates):
            self.jobs.append(rt.start_update(min(cfg.ray.learner_chunk, owed), b.real_ratio))
        # collectors, unless the learner is more than one chunk per collector behind; the lower
        # bound holds only once the learner can update at all (D_env holds
        # min_real_before_updates), or it would wait for data the collectors may not collect
        slack = self.min_ratio * cfg.ray.collector_chunk * rt.num_collectors
        learner_ready = rt.real_size() >= b.min_real_before_updates
        for index in sorted(self.idle_collectors, key=lambda i: self.last_launch.get(i, -1)):
            remaining = cfg.total_steps - self.launched_steps
            behind = self.min_ratio * self.steps_with_updates(self.launched_steps) - st.updates
            if remaining <= 0 or (learner_ready and behind > slack):
                break
            n = min(cfg.ray.collector_chunk, remaining)
            num_random = min(n, max(0, b.init_random_steps - self.launched_steps))
            self.last_launch[index] = self.launched_steps
            self.jobs.append(rt.start_collect(index, n, num_random))
            self.idle_collectors.discard(index)
            self.launched_steps += n

    # --- what has finished ---
    def wait_one(self) -> None:
        rt, st = self.runtime, self.state
        t0 = time.perf_counter()
        job, out = rt.wait_any(self.jobs)
        self.epoch_wait_seconds += time.perf_counter() - t0
        self.jobs.remove(job)
        if job.kind == "collect":
            st.env_steps += out["steps"]
            st.episode_returns.extend(out["finished_returns"])
            self.idle_collectors.add(job.index)
        elif job.kind == "update":
            st.updates += out["updates"]
        elif job.kind == "fit":
            st.model_metrics = out
            st.model_published = True
            self.start_due_rollouts()
        elif job.kind == "rollout":
            self.rollout_parts.append(out)
            if not self.busy("rollout"):
                st.rollout_metrics = rt.merge_rollout_metrics(self.rollout_parts)
                self.start_due_rollouts()

    def drain(self) -> None:
        """Wait for everything in flight (before a checkpoint or the end of the run); a fit
        that finishes here starts its rollouts, and they are waited for too."""
        while self.jobs:
            self.wait_one()

    # --- the loop ---
    def step(self) -> Optional[Dict[str, Any]]:
        cfg, st = self.cfg, self.state
        epoch_before = st.env_steps // cfg.mbpo.epoch_length

        def epoch_ended() -> bool:
            return st.env_steps // cfg.mbpo.epoch_length > epoch_before or st.env_steps >= cfg.total_steps
        while not epoch_ended():
            self.launch()
            if not self.jobs:
                break
            self.wait_one()
        if st.env_steps >= cfg.total_steps:
            self.finish_updates()
        return self.end_epoch() if epoch_ended() else None

    def finish_updates(self) -> None:
        """At the end of the run: let the learner reach the lower bound of the ratio."""
        self.drain()
        b, st = self.cfg.mbpo, self.state
        while int(self.min_ratio * self.steps_with_updates(self.state.env_steps)) > st.updates \
                and self.runtime.real_size() >= b.min_real_before_updates:
            self.launch()
            if not self.jobs:
                break
            self.drain()

    def end_epoch(self) -> Dict[str, Any]:
        st = self.state
        updates0, steps0 = self.epoch_updates_start
        record = super().end_epoch()
        steps = self.steps_with_updates(st.env_steps) - self.steps_with_updates(steps0)
        if steps > 0:
            record["perf/updates_per_env_step"] = (st.updates - updates0) / steps
        record["perf/updates_per_env_step_total"] = st.updates / max(1, self.steps_with_updates(st.env_steps))
        record["perf/driver_wait_seconds"] = self.epoch_wait_seconds
        self.epoch_updates_start = (st.updates, st.env_steps)
        self.epoch_wait_seconds = 0.0
        return record

    def state_dict(self) -> Dict[str, Any]:
        self.drain()
        self.launched_steps = self.state.env_steps
        return super().state_dict()
