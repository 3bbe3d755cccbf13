"""The actors of one run: created with the resources of ``RayConfig``, recreated when one dies."""
from __future__ import annotations

from typing import Any, Callable, Dict

from mbpo_ray.errors import ConfigError
from mbpo_ray.runtime.ray import actors as roles
from mbpo_ray.runtime.ray.cluster import required_resources, role_resources

READY_TIMEOUT_S = 180
# ... and when the actors wait for an autoscaler to start their nodes (a cloud GPU node takes
# minutes to boot and pull the image)
AUTOSCALING_READY_TIMEOUT_S = 1800

# Roles a run survives losing: recreated from the last published weights, their call redone.
# The learner and the buffer actor hold state that is only in the last checkpoint.
RESTARTABLE = ("collector", "rollout_worker", "model_trainer")


class ActorGroup:
    """Buffer actor, learner, model trainer, collectors and rollout workers of one run."""

    def __init__(self, cfg, obs_dim: int, act_dim: int):
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.restarts: Dict[str, int] = {}
        self.buffer = self._new("buffer")
        self.learner = self._new("learner")
        self.model_trainer = self._new("model_trainer")
        self.collectors = [self._new("collector", i) for i in range(cfg.ray.num_collectors)]
        self.rollout_workers = [self._new("rollout_worker", i) for i in range(cfg.ray.num_rollout_workers)]

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until every actor is up; a group that cannot be placed is an error, not a hang."""
        import ray

        cfg = self.cfg
        pings = [a.__ray_ready__.remote() for a in self.everyone()]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=timeout_s)
        if len(ready) < len(pings):
            raise ConfigError(f"runtime=ray: the actors could not all be started within {timeout_s:g} s; "
                              f"the cluster's free resources are {ray.available_resources()}, the run needs "
                              f"{required_resources(cfg)}")
        ray.get(pings)

    def everyone(self):
        return [self.buffer, self.learner, self.model_trainer, *self.collectors, *self.rollout_workers]

    def _options(self, role: str) -> Dict[str, Any]:
        need = dict(role_resources(self.cfg, role))
        return {"num_cpus": need.pop("CPU", 0.0), "num_gpus": need.pop("GPU", 0.0), "resources": need}

    def _new(self, role: str, index: int = 0):
        import ray

        cfg, r, o, a = self.cfg, self.cfg.ray, self.obs_dim, self.act_dim
        seed = cfg.seed + 7919 * self.restarts.get(role, 0)
        if role == "collector":
            cls = ray.remote(roles.EnvCollector).options(**self._options("collector"))
            return cls.remote(cfg, seed + 104_729 * index, r.collector_cpus)
        if role == "rollout_worker":
            cls = ray.remote(roles.RolloutWorker).options(**self._options("rollout_worker"))
            return cls.remote(cfg, o, a, seed + 3 + index, r.rollout_worker_cpus, r.rollout_worker_gpus)
        if role == "model_trainer":
            cls = ray.remote(roles.ModelTrainer).options(**self._options("model_trainer"))
            return cls.remote(cfg, o, a, seed + 2, r.model_trainer_cpus, r.model_trainer_gpus)
        if role == "learner":
            cls = ray.remote(roles.Learner).options(**self._options("learner"))
            return cls.remote(cfg, o, a, cfg.seed, r.learner_cpus, r.learner_gpus)
        if role == "buffer":
            cls = ray.remote(roles.BufferActor).options(**self._options("buffer"))
            return cls.remote(cfg, o, a, cfg.seed + 1)
        raise AssertionError(role)

    def actor(self, role: str, index: int = 0):
        if role == "collector":
            return self.collectors[index]
        if role == "rollout_worker":
            return self.rollout_workers[index]
        return getattr(self, role)

    def restart(self, role: str, index: int = 0) -> Any:
        """Recreate a dead actor (a new seed, so it does not repeat its predecessor's draws);
        returns the new actor. The caller gives it the last published state."""
        if role not in RESTARTABLE:
            raise RuntimeError(f"the {role} actor died; resume the run from its last checkpoint")
        count = self.restarts.get(role, 0) + 1
        if count > self.cfg.ray.max_actor_restarts:
            raise RuntimeError(f"the {role} actor died more than ray.max_actor_restarts="
                               f"{self.cfg.ray.max_actor_restarts} times")
        self.restarts[role] = count
        actor = self._new(role, index)
        if role == "collector":
            self.collectors[index] = actor
        elif role == "rollout_worker":
            self.rollout_workers[index] = actor
        else:
            self.model_trainer = actor
        print(f"mbpo-ray: the {role} {index} died; restarted it (restart {count})", flush=True)
        return actor

    def call(self, role: str, index: int, method: Callable[[Any], Any], on_restart: Callable[[str, int], None]):
        """``ray.get(method(actor))``, recreating the actor (then ``on_restart(role, index)``)
        and calling again when it has died."""
        import ray

        while True:
            try:
                return ray.get(method(self.actor(role, index)))
            except ray.exceptions.RayActorError:
                self.restart(role, index)
                on_restart(role, index)

    def kill(self) -> None:
        import ray

        for actor in [*getattr(self, "collectors", []), *getattr(self, "rollout_workers", [])]:
            ray.kill(actor)
        for name in ("model_trainer", "learner", "buffer"):
            if hasattr(self, name):
                ray.kill(getattr(self, name))
