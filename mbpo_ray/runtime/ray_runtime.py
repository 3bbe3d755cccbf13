"""One MBPO run as a group of Ray actors (DESIGN.md section 2).

``RayRuntime`` implements the ``Runtime`` interface over the actors of ``ray_actors``, so the
sync schedule is the unchanged ``MBPOLoop`` (the paper's order and ratios, step for step).
``AsyncMBPOLoop`` is the same loop with the work overlapped: collectors, model fits, rollouts
and SAC updates all run at once, and a rate limiter keeps SAC updates per env step within
``[ray.min_updates_per_step, ray.max_updates_per_step]``.

Faults: a collector, rollout worker or model trainer that dies is recreated by the driver
from the last published weights and its unfinished call is redone (``ray.max_actor_restarts``
times per role). Transitions that reached the buffer actor stay there; a collector pushes its
transitions before its call returns, so only a killed call's unpushed steps are redone.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mbpo_ray.agents.sac import TanhGaussianPolicy
from mbpo_ray.algos.mbpo import MBPOLoop
from mbpo_ray.config import ConfigError, TrainConfig
from mbpo_ray.data.buffers import model_buffer_capacity
from mbpo_ray.envs import make_env
from mbpo_ray.evaluation import evaluate_policy
from mbpo_ray.runtime import ray_actors as roles


def required_resources(cfg: TrainConfig) -> Dict[str, float]:
    r = cfg.ray
    need = {
        "CPU": r.num_collectors * r.collector_cpus + r.num_rollout_workers * r.rollout_worker_cpus
        + r.model_trainer_cpus + r.learner_cpus + r.buffer_cpus,
        "GPU": r.num_rollout_workers * r.rollout_worker_gpus + r.model_trainer_gpus + r.learner_gpus,
    }
    if r.worker_node_resource:
        need[r.worker_node_resource] = (r.num_collectors + r.num_rollout_workers) * WORKER_RESOURCE_UNIT
    return {k: v for k, v in need.items() if v > 0}


WORKER_RESOURCE_UNIT = 0.01  # what one collector / rollout worker takes of ray.worker_node_resource


def connect(cfg: TrainConfig) -> bool:
    """Join the cluster of ``ray.address`` / RAY_ADDRESS, or start Ray in-process. Returns
    whether this call initialised Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        # Logical CPUs: at least what the actors ask for (an actor mostly waits in the sync
        # schedule, so asking for more than the cores is normal on a laptop).
        cpus = max(os.cpu_count() or 1, int(np.ceil(required_resources(cfg).get("CPU", 1))))
        # address="local": a new instance even when another Ray already runs on this machine
        ray.init(address="local", num_cpus=cpus, object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)
    return True


def check_resources(cfg: TrainConfig) -> None:
    """Stop at once, naming what is missing, when the cluster cannot hold the actor group."""
    import ray

    have = ray.cluster_resources()
    missing = [f"{name}: needs {need:g}, the cluster has {have.get(name, 0):g}"
               for name, need in required_resources(cfg).items() if need > have.get(name, 0) + 1e-9]
    if missing:
        raise ConfigError("runtime=ray: the Ray cluster lacks resources the config asks for ("
                          + "; ".join(missing) + "). Lower the ray.*_cpus / ray.*_gpus fields, "
                          "or join a cluster that has them (--address / RAY_ADDRESS).")


class RayRuntime:
    """The actor group of one run, and the ``Runtime`` interface over it (sync schedule)."""

    def __init__(self, cfg: TrainConfig, device=None):
        self.cfg = cfg
        self.started_ray = connect(cfg)
        try:
            check_resources(cfg)
            self._build()
        except BaseException:
            self.close()
            raise

    # --- actors ---
    def _options(self, cpus: float, gpus: float = 0.0, worker: bool = False) -> Dict[str, Any]:
        opts: Dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
        if worker and self.cfg.ray.worker_node_resource:
            opts["resources"] = {self.cfg.ray.worker_node_resource: WORKER_RESOURCE_UNIT}
        return opts

    def _new(self, role: str, index: int = 0):
        import ray

        cfg, r = self.cfg, self.cfg.ray
        restart = self.restarts.get(role, 0)
        seed = cfg.seed + 7919 * restart
        if role == "collector":
            cls = ray.remote(roles.EnvCollector).options(**self._options(r.collector_cpus, worker=True))
            return cls.remote(cfg, seed + 104_729 * index, r.collector_cpus)
        if role == "rollout_worker":
            cls = ray.remote(roles.RolloutWorker).options(
                **self._options(r.rollout_worker_cpus, r.rollout_worker_gpus, worker=True))
            return cls.remote(cfg, self.obs_dim, self.act_dim, seed + 3 + index, r.rollout_worker_cpus,
                              r.rollout_worker_gpus)
        if role == "model_trainer":
            cls = ray.remote(roles.ModelTrainer).options(**self._options(r.model_trainer_cpus, r.model_trainer_gpus))
            return cls.remote(cfg, self.obs_dim, self.act_dim, seed + 2, r.model_trainer_cpus, r.model_trainer_gpus)
        if role == "learner":
            cls = ray.remote(roles.Learner).options(**self._options(r.learner_cpus, r.learner_gpus))
            return cls.remote(cfg, self.obs_dim, self.act_dim, cfg.seed, r.learner_cpus, r.learner_gpus)
        if role == "buffer":
            cls = ray.remote(roles.BufferActor).options(**self._options(r.buffer_cpus))
            return cls.remote(cfg, self.obs_dim, self.act_dim, cfg.seed + 1)
        raise AssertionError(role)

    def _build(self) -> None:
        import ray

        cfg = self.cfg
        self.obs_dim, self.act_dim = roles.dims(cfg)
        self.restarts: Dict[str, int] = {}
        self.buffer = self._new("buffer")
        self.learner = self._new("learner")
        self.model_trainer = self._new("model_trainer")
        self.collectors = [self._new("collector", i) for i in range(cfg.ray.num_collectors)]
        self.rollout_workers = [self._new("rollout_worker", i) for i in range(cfg.ray.num_rollout_workers)]
        # Wait until every actor is up; a group that cannot be placed is an error, not a hang.
        everyone = [self.buffer, self.learner, self.model_trainer, *self.collectors, *self.rollout_workers]
        pings = [a.__ray_ready__.remote() for a in everyone]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=180)
        if len(ready) < len(pings):
            raise ConfigError("runtime=ray: the actors could not all be started within 180 s; the cluster's "
                              f"free resources are {ray.available_resources()}, the run needs "
                              f"{required_resources(cfg)}")
        ray.get(pings)
        self.eval_env = make_env(cfg.env_id)
        self.eval_policy = TanhGaussianPolicy(self.obs_dim, self.act_dim, cfg.sac.hidden_width,
                                              cfg.sac.num_hidden_layers)
        from mbpo_ray.runtime.local import ActionScaler
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

    def restart(self, role: str, index: int = 0) -> None:
        """Recreate a dead actor from the last published state."""
        import ray

        count = self.restarts.get(role, 0) + 1
        if count > self.cfg.ray.max_actor_restarts:
            raise RuntimeError(f"the {role} actor died more than ray.max_actor_restarts="
                               f"{self.cfg.ray.max_actor_restarts} times")
        self.restarts[role] = count
        actor = self._new(role, index)
        if role == "collector":
            self.collectors[index] = actor
            if self.policy_ref is not None:
                self.stale_collectors.add(index)
        elif role == "rollout_worker":
            self.rollout_workers[index] = actor
        elif role == "model_trainer":
            self.model_trainer = actor
            if self.model_weights_ref is not None:
                ray.get(actor.load_weights.remote(self.model_weights_ref))
        else:
            raise AssertionError(role)
        print(f"mbpo-ray: the {role} {index} died; restarted it (restart {count})", flush=True)

    def with_restart(self, role: str, index: int, call: Callable[[Any], Any]):
        """``ray.get(call(actor))``, recreating the actor and retrying when it has died."""
        import ray

        while True:
            actor = self.actor(role, index)
            try:
                return ray.get(call(actor))
            except ray.exceptions.RayActorError:
                self.restart(role, index)

    def new_ticket(self, source: str) -> Tuple[str, int]:
        """A name for one call that pushes rows to the buffer actor; a redone call keeps it."""
        self.tickets += 1
        return source, self.tickets

    def actor(self, role: str, index: int = 0):
        return {"collector": lambda: self.collectors[index], "rollout_worker": lambda: self.rollout_workers[index],
                "model_trainer": lambda: self.model_trainer}[role]()

    # --- collection ---
    def launch_collect(self, index: int, num_steps: int, num_random: int, ticket: Tuple[str, int]):
        """Start a collect call (refreshing the collector's policy first if it is stale)."""
        policy = None
        if index in self.stale_collectors and self.policy_ref is not None:
            policy = self.policy_ref  # Ray hands the weights over with the call
            self.stale_collectors.discard(index)
        return self.collectors[index].collect.remote(num_steps, num_random, self.buffer, ticket, policy)

    def collect(self, index: int, num_steps: int, num_random: int) -> Dict[str, Any]:
        ticket = self.new_ticket(f"collector{index}")
        out = self.with_restart("collector", index,
                                lambda _: self.launch_collect(index, num_steps, num_random, ticket))
        self.record_collect(index, out)
        return out

    def record_collect(self, index: int, out: Dict[str, Any]) -> None:
        self._perf.collect_steps += out["steps"]
        self._perf.collect_seconds += out["seconds"]
        if self.policy_version > 0 and out["policy_version"] >= 0:
            self._perf.lags.append(self.policy_version - out["policy_version"])

    def publish_policy(self, version: int, policy_ref=None) -> None:
        self.policy_ref = policy_ref if policy_ref is not None else self.learner.policy.remote()
        self.policy_version = version
        self.stale_collectors = set(range(len(self.collectors)))

    # --- Runtime interface (sync schedule) ---
    def env_step(self, random_action: bool) -> Optional[float]:
        index = self.next_collector
        self.next_collector = (index + 1) % len(self.collectors)
        out = self.collect(index, 1, 1 if random_action else 0)
        self.real_count += 1
        return out["finished_returns"][0] if out["finished_returns"] else None

    def real_size(self) -> int:
        return self.real_count

    def fit_model(self) -> Dict[str, float]:
        rows = self.buffer.all_env.remote()

        def call(trainer):
            metrics_ref, weights_ref = trainer.fit.options(num_returns=2).remote(rows)
            self._pending_weights = weights_ref
            return metrics_ref
        metrics = self.with_restart("model_trainer", 0, call)
        self.model_weights_ref = self._pending_weights
        self.model_version = metrics["model/version"]
        return metrics

    def rollout_tasks(self, num_start_states: int, k: int) -> List[Tuple[int, Any, Any]]:
        """Start one rollout call per worker; returns (worker index, ref, start-states ref)."""
        policy = self.policy_ref if self.policy_ref is not None else self.learner.policy.remote()
        shares = np.array_split(np.arange(num_start_states), len(self.rollout_workers))
        tasks = []
        for i, share in enumerate(shares):
            if len(share) == 0:
                continue
            starts = self.buffer.sample_env_obs.remote(len(share))
            ticket = self.new_ticket(f"rollout_worker{i}")
            ref = self.rollout_workers[i].generate.remote(self.model_weights_ref, policy, starts, k, self.buffer,
                                                          ticket)
            tasks.append((i, ref, (policy, starts, k, ticket)))
        return tasks

    def finish_rollout(self, index: int, ref, args) -> Dict[str, float]:
        import ray

        try:
            out = ray.get(ref)
        except ray.exceptions.RayActorError:
            self.restart("rollout_worker", index)
            policy, starts, k, ticket = args
            out = self.with_restart("rollout_worker", index, lambda w: w.generate.remote(
                self.model_weights_ref, policy, starts, k, self.buffer, ticket))
        self.record_rollout(out)
        return out

    def record_rollout(self, out: Dict[str, Any]) -> None:
        self._perf.rollout_transitions += out["rollout/transitions"]
        self._perf.rollout_seconds += out["seconds"]
        # versions the worker rolled out with, behind the newest published ones
        self._perf.rollout_model_lags.append(self.model_version - out["rollout/model_version"])
        self._perf.rollout_policy_lags.append(self.policy_version - out["rollout/policy_version"])

    def merge_rollout_metrics(self, parts: List[Dict[str, float]]) -> Dict[str, float]:
        import ray

        total = sum(p["rollout/transitions"] for p in parts)
        out = {"rollout/k": parts[0]["rollout/k"],
               "rollout/steps_taken": max(p["rollout/steps_taken"] for p in parts),
               "rollout/start_states": sum(p["rollout/start_states"] for p in parts),
               "rollout/transitions": total,
               "rollout/terminated_frac": sum(p["rollout/terminated_frac"] * p["rollout/transitions"]
                                              for p in parts) / max(1, total),
               "rollout/nonfinite": sum(p["rollout/nonfinite"] for p in parts),
               "rollout/mean_reward": sum(p["rollout/mean_reward"] * p["rollout/transitions"]
                                          for p in parts) / max(1, total),
               "rollout/model_buffer_size": ray.get(self.buffer.sizes.remote())["model"]}
        return out

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        import ray

        ray.get(self.buffer.resize_model.remote(model_buffer_capacity))
        parts = [self.finish_rollout(i, ref, args) for i, ref, args in self.rollout_tasks(num_start_states, rollout_length)]
        return self.merge_rollout_metrics(parts)

    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        import ray

        info_ref, policy_ref = self.launch_update(num_updates, real_ratio)
        self.record_update(ray.get(info_ref), policy_ref)

    def launch_update(self, num_updates: int, real_ratio: float):
        """Start SAC updates; returns refs to (info, published policy)."""
        return self.learner.update.options(num_returns=2).remote(num_updates, real_ratio, self.buffer)

    def record_update(self, out: Dict[str, Any], policy_ref) -> None:
        self._perf.updates += out["updates"]
        self._perf.update_seconds += out["seconds"]
        if out["updates"]:
            self.publish_policy(out["version"], policy_ref)

    def agent_metrics(self) -> Dict[str, float]:
        import ray

        return ray.get(self.learner.agent_metrics.remote())

    def runtime_metrics(self) -> Dict[str, float]:
        out = self._perf.metrics(len(self.rollout_workers))
        out["perf/actor_restarts"] = sum(self.restarts.values())
        return out

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

        return {
            "buffer": ray.get(self.buffer.state_dict.remote()),
            "learner": ray.get(self.learner.state_dict.remote()),
            "model_trainer": self.with_restart("model_trainer", 0, lambda a: a.state_dict.remote()),
            "collectors": [self.with_restart("collector", i, lambda a: a.state_dict.remote())
                           for i in range(len(self.collectors))],
            "driver": {"real_count": self.real_count, "next_collector": self.next_collector,
                       "tickets": self.tickets,
                       "model_version": self.model_version, "policy_version": self.policy_version,
                       "restarts": dict(self.restarts)},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        import ray

        # A resumed run may have been given more steps: D_env grows, it never drops data.
        wanted = min(self.cfg.sac.replay_size, self.cfg.total_steps)
        ray.get([self.buffer.load_state_dict.remote(state["buffer"]), self.buffer.grow_real.remote(wanted),
                 self.learner.load_state_dict.remote(state["learner"]),
                 self.model_trainer.load_state_dict.remote(state["model_trainer"])])
        for collector, collector_state in zip(self.collectors, state["collectors"]):
            ray.get(collector.load_state_dict.remote(collector_state))
        d = state["driver"]
        self.real_count, self.next_collector = d["real_count"], d["next_collector"] % len(self.collectors)
        self.model_version, self.restarts = d["model_version"], dict(d["restarts"])
        self.tickets = d.get("tickets", 0)
        if d["model_version"] > 0:
            self.model_weights_ref = self.model_trainer.weights.remote()
        if d["policy_version"] > 0:
            self.publish_policy(d["policy_version"])

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for name in ("collectors", "rollout_workers"):
            for actor in getattr(self, name, []):
                ray.kill(actor)
        for name in ("model_trainer", "learner", "buffer"):
            if hasattr(self, name):
                ray.kill(getattr(self, name))
        if self.started_ray:
            ray.shutdown()


class PerfCounters:
    """Per-actor throughput and weight-version lags of one epoch, from the calls' own reports
    (busy seconds inside each actor, so the rates are each role's speed, not the driver's)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.collect_steps, self.collect_seconds = 0, 0.0
        self.updates, self.update_seconds = 0, 0.0
        self.rollout_transitions, self.rollout_seconds = 0, 0.0
        self.lags: List[int] = []
        self.rollout_model_lags: List[int] = []
        self.rollout_policy_lags: List[int] = []

    def metrics(self, num_rollout_workers: int) -> Dict[str, float]:
        out: Dict[str, float] = {}
        if self.collect_seconds > 0:
            out["perf/collector_env_steps_per_s"] = self.collect_steps / self.collect_seconds
        if self.update_seconds > 0:
            out["perf/learner_updates_per_s"] = self.updates / self.update_seconds
        if self.rollout_seconds > 0:
            out["perf/rollout_transitions_per_s_per_worker"] = self.rollout_transitions / self.rollout_seconds
        for name, lags in (("collector_policy_lag", self.lags), ("rollout_model_lag", self.rollout_model_lags),
                           ("rollout_policy_lag", self.rollout_policy_lags)):
            if lags:
                out[f"perf/{name}"] = float(np.mean(lags))
                out[f"perf/{name}_max"] = float(np.max(lags))
        self.reset()
        return out


class AsyncMBPOLoop(MBPOLoop):
    """MBPO's loop with collection, model fitting, rollouts and SAC updates overlapped.

    The same quantities as the step-by-step loop, decoupled in time:
      * collectors step in chunks of ``ray.collector_chunk`` env steps, each with the newest
        policy the learner has published when the chunk starts;
      * once ``mbpo.model_train_freq`` more env steps have arrived, the model trainer refits
        (in the background) and, as soon as that fit is published, the rollout pool branches
        rollouts of length k(epoch) from real states into D_model;
      * the learner runs SAC updates in chunks of ``ray.learner_chunk``; the rate limiter lets it
        run while updates < max_updates_per_step x env steps (after the warm-up) and holds the
        collectors back while updates < min_updates_per_step x env steps, minus one chunk per
        collector of slack.
    At each epoch boundary the record is written as in the step-by-step loop, with the achieved
    update ratio and the weight-version lags under perf/.
    """

    def __init__(self, cfg: TrainConfig, runtime: RayRuntime, state=None):
        super().__init__(cfg, runtime, state)
        r, b = cfg.ray, cfg.mbpo
        self.max_ratio = b.updates_per_step if r.max_updates_per_step is None else r.max_updates_per_step
        self.min_ratio = self.max_ratio if r.min_updates_per_step is None else r.min_updates_per_step
        sched = self.state.schedule
        sched.setdefault("updates", 0)
        sched.setdefault("next_fit_at", b.init_random_steps)
        self.inflight: Dict[Any, Tuple[str, Any]] = {}
        self.launched_steps = self.state.env_steps
        self.idle_collectors = set(range(len(runtime.collectors)))
        self.last_launch: Dict[int, int] = {}  # collectors take turns
        self.learner_busy = False
        self.fit_busy = False
        self.rollouts_pending: List[Dict[str, float]] = []
        self.rollouts_left = 0
        self.epoch_updates_start = (sched["updates"], self.state.env_steps)
        self._epoch_wait_seconds = 0.0

    # --- what may start now ---
    def _since_warmup(self, steps: int) -> int:
        return max(0, steps - self.cfg.mbpo.init_random_steps)

    def _launch(self) -> None:
        cfg, b, rt, sched = self.cfg, self.cfg.mbpo, self.runtime, self.state.schedule
        # model refit, then rollouts once it is published
        if (self.uses_model and not self.fit_busy and self.rollouts_left == 0
                and self.state.env_steps >= sched["next_fit_at"]):
            while sched["next_fit_at"] <= self.state.env_steps:
                sched["next_fit_at"] += b.model_train_freq
            self._launch_fit()
        # SAC updates, up to the upper bound of the rate limiter
        owed = int(self.max_ratio * self._since_warmup(self.state.env_steps)) - sched["updates"]
        if (not self.learner_busy and owed >= 1 and self.state.env_steps > b.init_random_steps
                and rt.real_size() >= b.min_real_before_updates):
            n = min(cfg.ray.learner_chunk, owed)
            info_ref, policy_ref = rt.launch_update(n, b.real_ratio)
            self.inflight[info_ref] = ("update", policy_ref)
            self.learner_busy = True
        # collectors, unless the learner is more than one chunk per collector behind
        slack = self.min_ratio * cfg.ray.collector_chunk * len(rt.collectors)
        behind = self.min_ratio * self._since_warmup(self.launched_steps) - sched["updates"]
        for index in sorted(self.idle_collectors, key=lambda i: self.last_launch.get(i, -1)):
            remaining = cfg.total_steps - self.launched_steps
            if remaining <= 0 or behind > slack:
                break
            n = min(cfg.ray.collector_chunk, remaining)
            num_random = min(n, max(0, b.init_random_steps - self.launched_steps))
            self._launch_collect(index, n, num_random)
            self.launched_steps += n
            behind = self.min_ratio * self._since_warmup(self.launched_steps) - sched["updates"]

    def _launch_collect(self, index: int, n: int, num_random: int, ticket=None) -> None:
        self.last_launch[index] = self.launched_steps
        ticket = ticket or self.runtime.new_ticket(f"collector{index}")
        ref = self.runtime.launch_collect(index, n, num_random, ticket)
        self.inflight[ref] = ("collect", (index, n, num_random, ticket))
        self.idle_collectors.discard(index)

    def _launch_fit(self) -> None:
        rt = self.runtime
        metrics_ref, weights_ref = rt.model_trainer.fit.options(num_returns=2).remote(rt.buffer.all_env.remote())
        self.inflight[metrics_ref] = ("fit", weights_ref)
        self.fit_busy = True

    def _launch_rollouts(self) -> None:
        import ray

        b, rt = self.cfg.mbpo, self.runtime
        k = self.rollout_length()
        capacity = model_buffer_capacity(b.model_retain_epochs, b.epoch_length, b.model_train_freq,
                                         b.rollout_batch_size, k)
        ray.get(rt.buffer.resize_model.remote(capacity))
        tasks = rt.rollout_tasks(self.start_states_per_rollout, k)
        for index, ref, args in tasks:
            self.inflight[ref] = ("rollout", (index, args))
        self.rollouts_left = len(tasks)
        self.rollouts_pending = []

    # --- what has finished ---
    def _wait_one(self) -> None:
        import ray

        t0 = time.perf_counter()
        [ref], _ = ray.wait(list(self.inflight), num_returns=1)
        self._epoch_wait_seconds += time.perf_counter() - t0
        kind, info = self.inflight.pop(ref)
        rt, st = self.runtime, self.state
        try:
            out = ray.get(ref)
        except ray.exceptions.RayActorError:
            self._redo(kind, info)
            return
        if kind == "collect":
            index = info[0]
            rt.record_collect(index, out)
            rt.real_count = max(rt.real_count, out["real_added"])
            st.env_steps += out["steps"]
            st.episode_returns.extend(out["finished_returns"])
            self.idle_collectors.add(index)
        elif kind == "update":
            rt.record_update(out, info)
            st.schedule["updates"] += out["updates"]
            self.learner_busy = False
        elif kind == "fit":
            st.model_metrics = out
            rt.model_weights_ref, rt.model_version = info, out["model/version"]
            self.fit_busy = False
            self._launch_rollouts()
        elif kind == "rollout":
            rt.record_rollout(out)
            self.rollouts_pending.append(out)
            self.rollouts_left -= 1
            if self.rollouts_left == 0:
                st.rollout_metrics = rt.merge_rollout_metrics(self.rollouts_pending)

    def _redo(self, kind: str, info) -> None:
        """The actor of this call died: recreate it and start the call again."""
        rt = self.runtime
        if kind == "collect":
            index, n, num_random, ticket = info
            rt.restart("collector", index)
            self._launch_collect(index, n, num_random, ticket)
        elif kind == "fit":
            rt.restart("model_trainer")
            self._launch_fit()
        elif kind == "rollout":
            index, (policy, starts, k, ticket) = info
            rt.restart("rollout_worker", index)
            ref = rt.rollout_workers[index].generate.remote(rt.model_weights_ref, policy, starts, k, rt.buffer,
                                                            ticket)
            self.inflight[ref] = ("rollout", info)
        else:
            raise RuntimeError(f"the learner died during a {kind} call; resume the run from its checkpoint")

    def drain(self) -> None:
        """Wait for everything in flight (before a checkpoint or the end of the run)."""
        while self.inflight:  # a fit that finishes here starts rollouts: they are waited for too
            self._wait_one()

    # --- the loop ---
    def step(self) -> Optional[Dict[str, Any]]:
        cfg, st = self.cfg, self.state
        epoch_before = st.env_steps // cfg.mbpo.epoch_length
        while True:
            self._launch()
            if not self.inflight:
                break
            self._wait_one()
            if st.env_steps // cfg.mbpo.epoch_length > epoch_before or st.env_steps >= cfg.total_steps:
                break
        if st.env_steps >= cfg.total_steps:
            self._finish_updates()
        if st.env_steps // cfg.mbpo.epoch_length > epoch_before or st.env_steps >= cfg.total_steps:
            return self.end_epoch()
        return None

    def _finish_updates(self) -> None:
        """At the end of the run: let the learner reach the lower bound of the ratio."""
        self.drain()
        b, sched = self.cfg.mbpo, self.state.schedule
        while int(self.min_ratio * self._since_warmup(self.state.env_steps)) > sched["updates"] \
                and self.runtime.real_size() >= b.min_real_before_updates:
            self._launch()
            if not self.inflight:
                break
            self.drain()

    def end_epoch(self) -> Dict[str, Any]:
        sched, st = self.state.schedule, self.state
        updates0, steps0 = self.epoch_updates_start
        wait = self._epoch_wait_seconds
        record = super().end_epoch()
        steps = self._since_warmup(st.env_steps) - self._since_warmup(steps0)
        if steps > 0:
            record["perf/updates_per_env_step"] = (sched["updates"] - updates0) / steps
        record["perf/updates_per_env_step_total"] = sched["updates"] / max(1, self._since_warmup(st.env_steps))
        record["perf/driver_wait_seconds"] = wait
        self.epoch_updates_start = (sched["updates"], st.env_steps)
        self._epoch_wait_seconds = 0.0
        return record

    def state_dict(self) -> Dict[str, Any]:
        self.drain()
        self.launched_steps = self.state.env_steps
        return super().state_dict()
