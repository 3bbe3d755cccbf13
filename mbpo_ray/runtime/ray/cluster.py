"""Joining or starting Ray, and what one run's actor group asks of the cluster."""
from __future__ import annotations

import math
import os
from typing import Dict, List

from mbpo_ray.errors import ConfigError

# What one actor takes of ray.worker_node_resource (collectors, rollout workers) or of
# ray.learner_node_resource (learner, model trainer, buffer actor): a node that advertises 1 unit
# holds 100 such actors (docs/clusters.md, "Node types and custom resources").
WORKER_RESOURCE_UNIT = 0.01
WORKER_ROLES = ("collector", "rollout_worker")
LEARNER_ROLES = ("buffer", "learner", "model_trainer")


# The roles of a run's actor group, in the order they are created (group.py).
ROLES = ("buffer", "learner", "model_trainer", "collector", "rollout_worker")


def role_resources(cfg, role: str) -> Dict[str, float]:
    """What one actor of ``role`` asks Ray for: ``CPU``, ``GPU`` and, for collectors and rollout
    workers, ``ray.worker_node_resource``; for the learner, model trainer and buffer actor,
    ``ray.learner_node_resource``. Zero amounts are left out."""
    r = cfg.ray
    cpus, gpus = {
        "buffer": (r.buffer_cpus, 0.0),
        "learner": (r.learner_cpus, r.learner_gpus),
        "model_trainer": (r.model_trainer_cpus, r.model_trainer_gpus),
        "collector": (r.collector_cpus, 0.0),
        "rollout_worker": (r.rollout_worker_cpus, r.rollout_worker_gpus),
    }[role]
    need = {"CPU": cpus, "GPU": gpus}
    if role in WORKER_ROLES and r.worker_node_resource:
        need[r.worker_node_resource] = WORKER_RESOURCE_UNIT
    if role in LEARNER_ROLES and r.learner_node_resource:
        need[r.learner_node_resource] = WORKER_RESOURCE_UNIT
    return {k: float(v) for k, v in need.items() if v > 0}


def actor_bundles(cfg) -> List[Dict[str, float]]:
    """One entry per actor of the group (``role_resources``), in creation order: the bundles of
    a placement group that holds the whole group (a Tune trial reserves one, docs/sweeps.md).
    Actors that ask for nothing (the buffer actor with ``ray.buffer_cpus: 0`` and no
    ``ray.learner_node_resource``) have no bundle."""
    counts = {"collector": cfg.ray.num_collectors, "rollout_worker": cfg.ray.num_rollout_workers}
    bundles = [role_resources(cfg, role) for role in ROLES for _ in range(counts.get(role, 1))]
    return [b for b in bundles if b]


def required_resources(cfg) -> Dict[str, float]:
    """CPUs, GPUs (and the custom node resources) the whole actor group of a run needs."""
    need: Dict[str, float] = {}
    for bundle in actor_bundles(cfg):
        for name, amount in bundle.items():
            need[name] = need.get(name, 0.0) + amount
    return need


def connect(cfg) -> bool:
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
        cpus = max(os.cpu_count() or 1, int(math.ceil(required_resources(cfg).get("CPU", 1))))
        # address="local": a new instance even when another Ray already runs on this machine
        ray.init(address="local", num_cpus=cpus, object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)
    return True


def check_resources(cfg, stream=None) -> bool:
    """Stop at once, naming what is missing, when the cluster can never hold the actor group: not
    with the nodes alive now nor, on an autoscaling cluster, with every node its autoscaler may
    add (``capacity.Capacity``). Returns whether the group waits for the autoscaler (it fits
    the node types but not the nodes alive now), which ``stream`` is told."""
    import sys

    from mbpo_ray.runtime.ray.capacity import cluster_capacity, fmt

    capacity = cluster_capacity()
    bundles = actor_bundles(cfg)
    need = required_resources(cfg)
    missing = [f"{name}: needs {amount:g}, the cluster has "
               + (f"{capacity.most(name):g}" if not capacity.autoscaling else f"at most {capacity.most(name):g}")
               for name, amount in need.items() if amount > capacity.most(name) + 1e-9]
    missing += [f"one actor needs {fmt(b)} on one node, and no node "
                + ("or node type " if capacity.autoscaling else "") + "has that"
                for b in bundles if not capacity.node_fits(b, ever=True)][:1]
    if missing:
        grows = f" ({capacity.describe_types()})" if capacity.autoscaling else ""
        raise ConfigError("runtime=ray: the Ray cluster lacks resources the config asks for ("
                          + "; ".join(missing) + f"){grows}. Lower the ray.*_cpus / ray.*_gpus fields, "
                          "or join a cluster that has them (--address / RAY_ADDRESS).")
    if capacity.fits_now(bundles):
        return False
    (stream or sys.stderr).write(
        f"runtime=ray: the actors need {fmt(need)}, more than the nodes alive now ({fmt(capacity.now())}); "
        f"waiting for the autoscaler to add nodes ({capacity.describe_types()})\n")
    return True
