"""The roles of one MBPO run on Ray (docs/architecture.md), as plain classes.

``mbpo_ray.runtime.ray.group`` turns them into Ray actors with the resources of
``RayConfig``; they never import ray themselves except to call another actor, so each role can
also be built and tested in-process. Transitions travel as packed float32 rows
[obs | act | reward | next_obs | terminated] (``ReplayBuffer``'s layout), in numpy arrays that
Ray's object store hands between processes on a node without copying.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from mbpo_ray.agents.metrics import MetricMean
from mbpo_ray.agents.sac import METRIC_NAMES, SAC, TanhGaussianPolicy
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer, d_env_capacity, sample_mixed
from mbpo_ray.data.rows import RowLayout
from mbpo_ray.devices import resolve_device
from mbpo_ray.precision import autocast, choose_precision
from mbpo_ray.process_setup import set_up as set_up_process
from mbpo_ray.live_metrics import elite_mse
from mbpo_ray.envs import TrainingEnv, make_env, make_termination
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.rollout import branched_rollout, make_rollout_uncertainty
from mbpo_ray.models.termination import LearnedTermination
from mbpo_ray.nn import cpu_weights


def actor_device(cfg: TrainConfig, gpus: float) -> torch.device:
    """The device of an actor, by the one device rule (``mbpo_ray.devices``) applied to
    ``cfg.device`` and the GPUs Ray assigned this actor (none when it asked for none; Ray sets
    CUDA_VISIBLE_DEVICES to the assigned GPUs, so inside the actor they are the visible ones)."""
    import ray

    gpu_ids = list(ray.get_gpu_ids()) if gpus > 0 and ray.is_initialized() else []
    return resolve_device(cfg.device, gpu_ids=gpu_ids)


def dims(cfg: TrainConfig) -> Tuple[int, int]:
    env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
    out = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return out


class Role:
    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


class EnvCollector(Role):
    """Steps one training env with the latest policy weights it was given and pushes every
    transition to the buffer actor before the call returns (nothing is held back between
    calls, so a killed collector loses only its unfinished episode's bookkeeping)."""

    def __init__(self, cfg: TrainConfig, seed: int, cpus: float = 1.0):
        set_up_process(cpus)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.train_env = TrainingEnv(cfg.env_id, seed, cfg.env_kwargs)
        self.policy = TanhGaussianPolicy.from_config(self.train_env.obs_dim, self.train_env.act_dim, cfg.sac)
        self.layout = RowLayout(self.train_env.obs_dim, self.train_env.act_dim)
        self.policy_version = -1
        self.steps = 0

    def set_policy(self, policy: Dict[str, Any]) -> None:
        """``policy``: the learner's ``{"version", "weights"}``."""
        self.policy.load_state_dict(policy["weights"])
        self.policy_version = policy["version"]

    def _step(self, random_action: bool) -> Tuple[np.ndarray, Optional[float], Optional[np.ndarray]]:
        """(row, finished return, behaviour): behaviour is [obs | mean | log std] of the policy's
        Gaussian where it acted (None for a random action), for rollout/policy_kl
        (docs/diagnostics.md#live-metrics)."""
        env = self.train_env
        behavior = None
        if random_action:
            action = env.random_action()
        else:
            with torch.no_grad():
                obs_t = torch.as_tensor(env.obs, dtype=torch.float32)[None]
                action, mean, log_std = self.policy.act_and_gaussian(obs_t)
                action, behavior = action[0].numpy(), torch.cat([obs_t, mean, log_std], dim=-1)[0].numpy()
        step = env.step(action)
        self.steps += 1
        row = self.layout.pack_numpy(step.obs, step.action, step.reward, step.next_obs, step.terminated)
        return row, None if step.finished is None else step.finished[0], behavior

    def collect(self, num_steps: int, num_random: int, buffer, ticket: Tuple[str, int],
                policy: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """``num_steps`` env steps (the first ``num_random`` with uniform random actions), then
        push them all to the buffer actor and wait until it has them. ``ticket``: the driver's
        name for this call, kept when the call is redone, so that a chunk that reached the buffer
        actor before its collector died is not stored twice. ``policy``: newer weights to act
        with, passed along with the call (one remote call per chunk)."""
        import ray

        start = time.perf_counter()
        if policy is not None:
            self.set_policy(policy)
        rows, finished, behavior = [], [], []
        for i in range(num_steps):
            row, ret, acted = self._step(i < num_random)
            rows.append(row)
            if ret is not None:
                finished.append(ret)
            if acted is not None:
                behavior.append(acted)
        real_added, stored = ray.get(buffer.add_env.remote(np.stack(rows), ticket))
        if not stored:  # a redone call whose chunk is already in D_env: these episodes are not
            finished = []  # the ones stored, so their returns are not reported either
        width = self.layout.obs_dim + 2 * self.layout.act_dim
        return {"finished_returns": finished, "policy_version": self.policy_version,
                "steps": num_steps, "seconds": time.perf_counter() - start, "real_added": real_added,
                "behavior": np.stack(behavior) if behavior else np.zeros((0, width), np.float32)}

    def state_dict(self) -> Dict[str, Any]:
        return {**self.train_env.state_dict(), "torch_rng": torch.get_rng_state(), "steps": self.steps}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.train_env.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])
        self.steps = state["steps"]


class BufferActor(Role):
    """Owns D_env and D_model. Counts every row ever added to each, so a replica can ask for
    'everything since row n' and receive one large slice per call."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, seed: int):
        torch.manual_seed(seed)
        self.real = ReplayBuffer(obs_dim, act_dim, d_env_capacity(cfg))
        self.model = ReplayBuffer(obs_dim, act_dim, 1)
        self.real_added = 0
        self.model_added = 0
        self.last_ticket: Dict[str, int] = {}

    def _first_time(self, ticket: Tuple[str, int]) -> bool:
        """Each source (one collector or rollout-worker slot) has one call in flight at a time
        and the driver numbers calls increasingly, so a ticket not above the source's last one
        is a redone call whose rows are already stored."""
        source, number = ticket
        if number <= self.last_ticket.get(source, -1):
            return False
        self.last_ticket[source] = number
        return True

    def add_env(self, rows: np.ndarray, ticket: Tuple[str, int]) -> Tuple[int, bool]:
        """Store ``rows`` in D_env unless ``ticket`` was stored before; returns (rows ever added
        to D_env, stored)."""
        return self._add("real", rows, ticket)

    def add_model(self, rows: np.ndarray, ticket: Tuple[str, int]) -> Tuple[int, bool]:
        """As ``add_env``, into D_model."""
        return self._add("model", rows, ticket)

    def _add(self, which: str, rows: np.ndarray, ticket: Tuple[str, int]) -> Tuple[int, bool]:
        counter = f"{which}_added"
        if self._first_time(ticket):
            getattr(self, which).add_rows(torch.from_numpy(rows))
            setattr(self, counter, getattr(self, counter) + rows.shape[0])
            return getattr(self, counter), True
        return getattr(self, counter), False

    def resize_model(self, capacity: int) -> None:
        self.model.resize(capacity)

    def grow_real(self, capacity: int) -> None:
        self.real.resize(max(capacity, self.real.capacity))

    @staticmethod
    def _since(buffer: ReplayBuffer, added: int, cursor: int) -> np.ndarray:
        new = min(added - cursor, len(buffer))
        return buffer.rows_in_order()[len(buffer) - new:].numpy().copy() if new > 0 else \
            np.zeros((0, buffer.width), np.float32)

    def since(self, real_cursor: int, model_cursor: int):
        """The rows added to D_env and to D_model after the first ``real_cursor`` and
        ``model_cursor`` ones (at most each buffer's capacity), with the new cursors and the
        capacities: one call refreshes a replica."""
        return ((self._since(self.real, self.real_added, real_cursor), self.real_added, self.real.capacity),
                (self._since(self.model, self.model_added, model_cursor), self.model_added, self.model.capacity))

    def all_env(self) -> np.ndarray:
        return self.real.rows_in_order().numpy().copy()

    def all_env_counted(self) -> Tuple[np.ndarray, int]:
        """D_env's rows, oldest first, and the count of rows ever added, read together (a model
        fit uses the count to find the rows it has not seen: model/new_data_mse)."""
        return self.all_env(), self.real_added

    def sample_env_obs(self, n: int) -> np.ndarray:
        return self.real.sample(n)[0].numpy().copy()

    def sizes(self) -> Dict[str, int]:
        return {"real": len(self.real), "model": len(self.model), "real_added": self.real_added,
                "model_added": self.model_added, "model_capacity": self.model.capacity}

    def state_dict(self) -> Dict[str, Any]:
        return {"real": self.real.state_dict(), "model": self.model.state_dict(),
                "real_added": self.real_added, "model_added": self.model_added,
                "last_ticket": dict(self.last_ticket), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.real.load_state_dict(state["real"])
        self.model.load_state_dict(state["model"])
        self.real_added, self.model_added = state["real_added"], state["model_added"]
        self.last_ticket = dict(state.get("last_ticket", {}))
        torch.set_rng_state(state["torch_rng"])


def learned_termination(cfg: TrainConfig, obs_dim: int, device) -> Optional[LearnedTermination]:
    """The classifier of ``mbpo.termination: learned`` (docs/termination.md), else None."""
    return LearnedTermination(obs_dim, cfg.model, device) if cfg.mbpo.termination == "learned" else None


class ModelTrainer(Role):
    """Refits the ensemble on D_env, then (``mbpo.termination: learned``) the termination
    classifier; each fit publishes a new weights version, the classifier's with it."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, seed: int, cpus: float = 1.0,
                 gpus: float = 0.0):
        set_up_process(cpus)
        torch.manual_seed(seed)
        self.device = actor_device(cfg, gpus)
        self.precision = choose_precision(cfg.precision, self.device)
        self.model = ProbabilisticEnsemble(obs_dim, act_dim, cfg.model).to(self.device)
        self.trainer = EnsembleTrainer(self.model, cfg.model)
        self.termination = learned_termination(cfg, obs_dim, self.device)
        self.layout = RowLayout(obs_dim, act_dim)
        self.version = 0
        self.fit_added: Optional[int] = None  # D_env's rows-ever-added count at the last fit

    def fit(self, rows: np.ndarray, real_added: Optional[int] = None) -> Tuple[Dict[str, float], Dict[str, Any]]:
        """Refit on ``rows`` (D_env, oldest first). ``real_added``: the buffer actor's count of
        rows ever added, which gives model/new_data_mse (the current weights' error on the rows
        added since the last fit; docs/diagnostics.md#live-metrics)."""
        start = time.perf_counter()
        rows_t = torch.from_numpy(rows).to(self.device)
        new_data = None
        if real_added is not None and self.fit_added is not None and self.version > 0:
            n = min(real_added - self.fit_added, rows_t.shape[0])
            if n > 0:
                new_data = elite_mse(self.model, rows_t[-n:], self.layout)
        with autocast(self.device, self.precision):
            metrics = self.trainer.fit_rows(rows_t)
        if new_data is not None:
            metrics["model/new_data_mse"] = new_data
        if real_added is not None:
            self.fit_added = real_added
        if self.termination is not None:
            _, _, _, next_obs, terminated = self.layout.split(rows_t)
            with autocast(self.device, self.precision):
                metrics.update(self.termination.fit(next_obs, terminated))
        self.version += 1
        metrics["model/version"] = self.version
        metrics["model/actor_seconds"] = time.perf_counter() - start
        return metrics, self.weights()

    def weights(self) -> Dict[str, Any]:
        out = {"version": self.version,
               "model": cpu_weights(self.model)}
        if self.termination is not None:
            out["termination"] = self.termination.weights()
        return out

    def load_weights(self, weights: Dict[str, Any]) -> None:
        self.model.load_state_dict(weights["model"])
        if self.termination is not None:
            self.termination.load_weights(weights["termination"])
        self.version = weights["version"]

    def state_dict(self) -> Dict[str, Any]:
        state = {"weights": self.weights(), "trainer": self.trainer.state_dict(),
                 "torch_rng": torch.get_rng_state(), "fit_added": self.fit_added}
        if self.termination is not None:
            state["termination_optimizer"] = self.termination.optimizer.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.load_weights(state["weights"])
        self.trainer.load_state_dict(state["trainer"])
        self.fit_added = state.get("fit_added")
        if self.termination is not None:
            self.termination.optimizer.load_state_dict(state["termination_optimizer"])
        torch.set_rng_state(state["torch_rng"])


class RolloutWorker(Role):
    """Branched rollouts (``mbpo_ray.models.rollout.branched_rollout``) with given model and policy
    weights, from given start states; the transitions go straight to the buffer actor."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, seed: int, cpus: float = 1.0,
                 gpus: float = 0.0):
        set_up_process(cpus)
        torch.manual_seed(seed)
        self.device = actor_device(cfg, gpus)
        self.precision = choose_precision(cfg.precision, self.device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.model = ProbabilisticEnsemble(obs_dim, act_dim, cfg.model).to(self.device)
        self.policy = TanhGaussianPolicy.from_config(obs_dim, act_dim, cfg.sac).to(self.device)
        # mbpo.termination; a learned rule takes the classifier published with the model weights
        self.termination = make_termination(cfg, obs_dim, self.device)
        # mbpo.rollout_uncertainty: m2ac only (validation), which keeps no state between batches
        self.uncertainty = make_rollout_uncertainty(cfg.mbpo)

    def generate(self, model_weights: Dict[str, Any], policy: Dict[str, Any], start_obs: np.ndarray,
                 k: int, buffer, ticket: Tuple[str, int]) -> Dict[str, float]:
        """Branched rollouts from ``start_obs`` pushed to D_model; ``ticket`` as in
        ``EnvCollector.collect``."""
        import ray

        start = time.perf_counter()
        self.model.load_state_dict(model_weights["model"])
        if isinstance(self.termination, LearnedTermination):
            self.termination.load_weights(model_weights["termination"])
        self.policy.load_state_dict(policy["weights"])
        out = ReplayBuffer(self.obs_dim, self.act_dim, max(1, start_obs.shape[0] * k), self.device)
        with autocast(self.device, self.precision):
            metrics = branched_rollout(self.model, self.policy, torch.from_numpy(start_obs).to(self.device),
                                       k, self.termination, out, self.uncertainty)
        ray.get(buffer.add_model.remote(out.rows_in_order().cpu().numpy(), ticket))
        metrics["rollout/model_version"] = model_weights["version"]
        metrics["rollout/policy_version"] = policy["version"]
        metrics["seconds"] = time.perf_counter() - start
        return metrics


class Learner(Role):
    """SAC on its own device, sampling from a local replica of D_env and D_model that it
    refreshes from the buffer actor in large slices (never one batch per remote call)."""

    def __init__(self, cfg: TrainConfig, obs_dim: int, act_dim: int, seed: int, cpus: float = 1.0,
                 gpus: float = 0.0):
        set_up_process(cpus)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.device = actor_device(cfg, gpus)
        self.precision = choose_precision(cfg.precision, self.device)
        self.agent = SAC(obs_dim, act_dim, cfg.sac, self.device)
        self.real = ReplayBuffer(obs_dim, act_dim, d_env_capacity(cfg), self.device)
        self.model = ReplayBuffer(obs_dim, act_dim, 1, self.device)
        self.real_cursor = self.model_cursor = 0
        self.version = 0
        self.updates = 0
        self.metrics = MetricMean(METRIC_NAMES, self.device)

    def _refresh(self, buffer) -> None:
        import ray

        (real_rows, self.real_cursor, real_cap), (model_rows, self.model_cursor, model_cap) = ray.get(
            buffer.since.remote(self.real_cursor, self.model_cursor))
        if real_cap != self.real.capacity:
            self.real.resize(real_cap)
        self.real.add_rows(torch.from_numpy(real_rows).to(self.device))
        if model_cap != self.model.capacity:
            self.model.resize(model_cap)
        self.model.add_rows(torch.from_numpy(model_rows).to(self.device))

    def update(self, num_updates: int, real_ratio: float, buffer) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Refresh the replica, do ``num_updates`` SAC updates; returns (info, the policy as
        ``policy()`` gives it): called with num_returns=2, the driver reads only the info and
        hands the policy on by reference."""
        start = time.perf_counter()
        self._refresh(buffer)
        batch_size = self.cfg.sac.batch_size
        for _ in range(num_updates):
            batch = sample_mixed(self.real, self.model, batch_size, real_ratio)
            with autocast(self.device, self.precision):
                self.metrics.add(self.agent.update(*batch))
        self.updates += num_updates
        if num_updates:
            self.version += 1
        return ({"version": self.version, "updates": num_updates, "seconds": time.perf_counter() - start},
                self.policy())

    def policy(self) -> Dict[str, Any]:
        return {"version": self.version, "weights": cpu_weights(self.agent.policy)}

    def agent_metrics(self) -> Dict[str, float]:
        return self.metrics.read()

    def state_dict(self) -> Dict[str, Any]:
        # The replica is not saved: it is rebuilt from the buffer actor on resume.
        return {"agent": self.agent.full_state_dict(), "version": self.version, "updates": self.updates,
                **self.metrics.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.agent.load_full_state_dict(state["agent"])
        self.version, self.updates = state["version"], state["updates"]
        self.metrics.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])

