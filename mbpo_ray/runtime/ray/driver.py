"""One run as a group of Ray actors (docs/architecture.md, "The Ray runtime").

``RayRuntime`` offers both interfaces of ``mbpo_ray.runtime.base`` over the actors of
``actors``: the step-by-step ``Runtime`` (so the sync schedule is the unchanged MBPO loop, the
paper's order and ratios step for step) and the ``AsyncRuntime`` of jobs that the overlapped
schedule (``mbpo_ray.algos.mbpo_async``) starts and waits for. The step-by-step operations are
jobs waited for at once: one code path for both schedules.

Faults: a collector, rollout worker or model trainer that dies is recreated from the last
published weights and its unfinished job is started again inside ``wait_any``
(``ray.max_actor_restarts`` times per role). Transitions that reached the buffer actor stay
there; every call that pushes rows carries a ticket that a redone call keeps, so rows are never
stored twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mbpo_ray.data.buffers import d_env_capacity
from mbpo_ray.agents.sac import TanhGaussianPolicy
from mbpo_ray.live_metrics import BehaviorLog
from mbpo_ray.envs import ActionScaler, make_env
from mbpo_ray.evaluation import evaluate_policy
from mbpo_ray.runtime.base import Job
from mbpo_ray.runtime.ray import actors as roles
from mbpo_ray.runtime.ray.cluster import check_resources, connect
from mbpo_ray.runtime.ray.group import AUTOSCALING_READY_TIMEOUT_S, READY_TIMEOUT_S, ActorGroup
from mbpo_ray.runtime.ray.perf import PerfCounters

ROLE_OF_JOB = {"collect": "collector", "rollout": "rollout_worker", "fit": "model_trainer", "update": "learner"}


@dataclass
class _Call:
    """What a job waits on (``refs[0]``; ``refs[1]`` is published weights for fits and updates)
    and how to start it again on a recreated actor."""

    launch: Callable[[], Tuple[Any, ...]]
    refs: Tuple[Any, ...] = ()


class RayRuntime:
    """The actor group of one run, and the Runtime / AsyncRuntime interfaces over it."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.group: Optional[ActorGroup] = None
        self.started_ray = connect(cfg)
        try:
            waits = check_resources(cfg)
            self.obs_dim, self.act_dim = roles.dims(cfg)
            self.group = ActorGroup(cfg, self.obs_dim, self.act_dim)
            self.group.wait_ready(AUTOSCALING_READY_TIMEOUT_S if waits else READY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self.eval_env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
        self.eval_policy = TanhGaussianPolicy.from_config(self.obs_dim, self.act_dim, cfg.sac)
        self.scaler = ActionScaler(self.eval_env.action_space)
        self.policy_ref = None            # the learner's latest published policy
        self.policy_version = 0
        self.stale_collectors = set()     # collectors that have not been given policy_ref yet
        self.model_weights_ref = None     # the model trainer's latest published weights
        self.model_version = 0
        self.real_count = 0
        self.next_collector = 0
        self.tickets = 0                  # numbers the calls that push rows to the buffer actor
        self._perf = PerfCounters()
        # the collectors' policy Gaussians where they acted, for rollout/policy_kl
        self.behavior = BehaviorLog(self.obs_dim, self.act_dim)

    # --- the actors (read by tests and the multi-node checks) ---
    @property
    def buffer(self):
        return self.group.buffer

    @property
    def learner(self):
        return self.group.learner

    @property
    def model_trainer(self):
        return self.group.model_trainer

    @property
    def collectors(self):
        return self.group.collectors

    @property
    def rollout_workers(self):
        return self.group.rollout_workers

    @property
    def restarts(self) -> Dict[str, int]:
        return self.group.restarts

    @property
    def num_collectors(self) -> int:
        return len(self.group.collectors)

    def _restarted(self, role: str, index: int) -> None:
        """Give a recreated actor the last published state."""
        import ray

        if role == "collector" and self.policy_ref is not None:
            self.stale_collectors.add(index)
        elif role == "model_trainer" and self.model_weights_ref is not None:
            ray.get(self.group.model_trainer.load_weights.remote(self.model_weights_ref))

    def new_ticket(self, source: str) -> Tuple[str, int]:
        """A name for one call that pushes rows to the buffer actor; a redone call keeps it."""
        self.tickets += 1
        return source, self.tickets

    def publish_policy(self, version: int, policy_ref=None) -> None:
        self.policy_ref = policy_ref if policy_ref is not None else self.learner.policy.remote()
        self.policy_version = version
        self.stale_collectors = set(range(self.num_collectors))

    # --- AsyncRuntime: jobs ---
    def _job(self, kind: str, index: int, launch: Callable[[], Tuple[Any, ...]]) -> Job:
        call = _Call(launch)
        call.refs = launch()
        return Job(kind, index, call)

    def launch_collect(self, index: int, num_steps: int, num_random: int, ticket: Tuple[str, int]):
        """Start a collect call on collector ``index`` (handing it the newest policy first if it
        has not had it); returns the call's ref."""
        policy = None
        if index in self.stale_collectors and self.policy_ref is not None:
            policy = self.policy_ref  # Ray hands the weights over with the call
            self.stale_collectors.discard(index)
        return self.collectors[index].collect.remote(num_steps, num_random, self.buffer, ticket, policy)

    def start_collect(self, collector: int, num_steps: int, num_random: int) -> Job:
        ticket = self.new_ticket(f"collector{collector}")
        return self._job("collect", collector,
                         lambda: (self.launch_collect(collector, num_steps, num_random, ticket),))

    def start_fit(self) -> Job:
        rows, added = self.buffer.all_env_counted.options(num_returns=2).remote()
        return self._job("fit", 0, lambda: tuple(self.model_trainer.fit.options(num_returns=2).remote(rows, added)))

    def start_rollouts(self, num_start_states: int, rollout_length: int,
                       model_buffer_capacity: int) -> List[Job]:
        import ray

        ray.get(self.buffer.resize_model.remote(model_buffer_capacity))
        policy = self.policy_ref if self.policy_ref is not None else self.learner.policy.remote()
        shares = np.array_split(np.arange(num_start_states), len(self.rollout_workers))
        jobs = []
        for i, share in enumerate(shares):
            if len(share) == 0:
                continue
            starts = self.buffer.sample_env_obs.remote(len(share))
            ticket = self.new_ticket(f"rollout_worker{i}")

            def launch(i=i, starts=starts, ticket=ticket):
                return (self.rollout_workers[i].generate.remote(self.model_weights_ref, policy, starts,
                                                                rollout_length, self.buffer, ticket),)
            jobs.append(self._job("rollout", i, launch))
        return jobs

    def start_update(self, num_updates: int, real_ratio: float) -> Job:
        return self._job("update", 0, lambda: tuple(
            self.learner.update.options(num_returns=2).remote(num_updates, real_ratio, self.buffer)))

    def wait_any(self, jobs: Sequence[Job]) -> Tuple[Job, Dict[str, Any]]:
        import ray

        while True:
            by_ref = {job.handle.refs[0]: job for job in jobs}
            [ref], _ = ray.wait(list(by_ref), num_returns=1)
            job = by_ref[ref]
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError:
                role = ROLE_OF_JOB[job.kind]
                self.group.restart(role, job.index)
                self._restarted(role, job.index)
                job.handle.refs = job.handle.launch()
                continue
            return job, self._finished(job, out)

    def _finished(self, job: Job, out: Dict[str, Any]) -> Dict[str, Any]:
        """Take note of what a finished job published."""
        perf = self._perf
        if job.kind == "collect":
            perf.collect_steps += out["steps"]
            perf.collect_seconds += out["seconds"]
            if self.policy_version > 0 and out["policy_version"] >= 0:
                perf.lags.append(self.policy_version - out["policy_version"])
            self.real_count = max(self.real_count, out["real_added"])
            self.behavior.add_rows(torch.tensor(out["behavior"]))  # a copy: Ray's array is read-only
        elif job.kind == "fit":
            self.model_weights_ref, self.model_version = job.handle.refs[1], out["model/version"]
        elif job.kind == "rollout":
            perf.rollout_transitions += out["rollout/transitions"]
            perf.rollout_seconds += out["seconds"]
            # versions the worker rolled out with, behind the newest published ones
            perf.rollout_model_lags.append(self.model_version - out["rollout/model_version"])
            perf.rollout_policy_lags.append(self.policy_version - out["rollout/policy_version"])
        elif job.kind == "update":
            perf.updates += out["updates"]
            perf.update_seconds += out["seconds"]
            if out["updates"]:
                self.publish_policy(out["version"], job.handle.refs[1])
        return out

    def merge_rollout_metrics(self, parts: List[Dict[str, Any]]) -> Dict[str, float]:
        import ray

        total = sum(p["rollout/transitions"] for p in parts)

        def weighted(key, by="rollout/transitions"):
            return sum(p[key] * p[by] for p in parts) / max(1, sum(p[by] for p in parts))
        # the live diagnostics, per start state (docs/diagnostics.md#live-metrics)
        starts = {key: weighted(key, "rollout/start_states") for key in
                  ("rollout/ended_terminated", "rollout/ended_nonfinite", "rollout/start_disagreement",
                   "rollout/mean_length", "rollout/ended_by_uncertainty")
                  if all(key in p for p in parts)}
        if all("rollout/mean_uncertainty" in p for p in parts):
            starts["rollout/mean_uncertainty"] = weighted("rollout/mean_uncertainty")
        return {"rollout/k": parts[0]["rollout/k"],
                "rollout/steps_taken": max(p["rollout/steps_taken"] for p in parts),
                "rollout/start_states": sum(p["rollout/start_states"] for p in parts),
                "rollout/transitions": total,
                "rollout/terminated_frac": weighted("rollout/terminated_frac"),
                "rollout/nonfinite": sum(p["rollout/nonfinite"] for p in parts),
                "rollout/mean_reward": weighted("rollout/mean_reward"),
                "rollout/model_buffer_size": ray.get(self.buffer.sizes.remote())["model"], **starts}

    # --- Runtime: each operation is its jobs, waited for at once (the sync schedule) ---
    def _run(self, job: Job) -> Dict[str, Any]:
        return self.wait_any([job])[1]

    def env_step(self, random_action: bool) -> Optional[float]:
        index = self.next_collector
        self.next_collector = (index + 1) % self.num_collectors
        out = self._run(self.start_collect(index, 1, 1 if random_action else 0))
        return out["finished_returns"][0] if out["finished_returns"] else None

    def real_size(self) -> int:
        return self.real_count

    def fit_model(self) -> Dict[str, float]:
        return self._run(self.start_fit())

    def reset_model(self) -> None:
        raise NotImplementedError("the ray runtime does not reset its model (config validation refuses "
                                  "mbpo.model_reset_every with runtime ray)")

    def reset_agent(self) -> None:
        raise NotImplementedError("the ray runtime does not reset its learner (config validation refuses "
                                  "mbpo.agent_reset_every with runtime ray)")

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        jobs = self.start_rollouts(num_start_states, rollout_length, model_buffer_capacity)
        return self.merge_rollout_metrics([self._run(job) for job in jobs])

    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        self._run(self.start_update(num_updates, real_ratio))

    def agent_metrics(self) -> Dict[str, float]:
        import ray

        return ray.get(self.learner.agent_metrics.remote())

    def runtime_metrics(self) -> Dict[str, float]:
        out = self._perf.metrics()
        out["perf/actor_restarts"] = sum(self.restarts.values())
        return out

    def diagnostic_metrics(self) -> Dict[str, float]:
        """rollout/policy_kl: the latest published policy against the collectors' logged
        Gaussians (docs/diagnostics.md#live-metrics)."""
        import ray

        if len(self.behavior) == 0:
            return {}
        policy = ray.get(self.policy_ref if self.policy_ref is not None else self.learner.policy.remote())
        self.eval_policy.load_state_dict(policy["weights"])
        return {"rollout/policy_kl": self.behavior.take_kl(self.eval_policy)}

    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        """The latest published policy, deterministic, in the driver's own eval env."""
        import ray

        policy = ray.get(self.policy_ref if self.policy_ref is not None else self.learner.policy.remote())
        self.eval_policy.load_state_dict(policy["weights"])

        def act(obs):
            with torch.no_grad():
                a = self.eval_policy.act(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)
            return self.scaler.to_env(a[0].numpy())
        return evaluate_policy(self.eval_env, act, episodes, seed)

    # --- checkpoints ---
    def state_dict(self) -> Dict[str, Any]:
        import ray

        group = self.group
        return {
            "buffer": ray.get(self.buffer.state_dict.remote()),
            "learner": ray.get(self.learner.state_dict.remote()),
            "model_trainer": group.call("model_trainer", 0, lambda a: a.state_dict.remote(), self._restarted),
            "collectors": [group.call("collector", i, lambda a: a.state_dict.remote(), self._restarted)
                           for i in range(self.num_collectors)],
            "driver": {"real_count": self.real_count, "next_collector": self.next_collector,
                       "tickets": self.tickets,
                       "model_version": self.model_version, "policy_version": self.policy_version,
                       "restarts": dict(self.restarts), "behavior": self.behavior.state_dict()},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        import ray

        # A resumed run may have been given more steps: D_env grows, it never drops data.
        ray.get([self.buffer.load_state_dict.remote(state["buffer"]),
                 self.buffer.grow_real.remote(d_env_capacity(self.cfg)),
                 self.learner.load_state_dict.remote(state["learner"]),
                 self.model_trainer.load_state_dict.remote(state["model_trainer"])])
        for collector, collector_state in zip(self.collectors, state["collectors"]):
            ray.get(collector.load_state_dict.remote(collector_state))
        d = state["driver"]
        self.real_count, self.next_collector = d["real_count"], d["next_collector"] % self.num_collectors
        self.model_version = d["model_version"]
        self.group.restarts = dict(d["restarts"])
        self.tickets = d.get("tickets", 0)
        if "behavior" in d:
            self.behavior.load_state_dict(d["behavior"])
        if d["model_version"] > 0:
            self.model_weights_ref = self.model_trainer.weights.remote()
        if d["policy_version"] > 0:
            self.publish_policy(d["policy_version"])

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        if self.group is not None:
            self.group.kill()
        if self.started_ray:
            ray.shutdown()
