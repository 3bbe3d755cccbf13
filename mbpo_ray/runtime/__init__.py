"""Runtimes: where an algorithm's work happens. ``LocalRuntime`` runs everything in one
process; the algorithm loops in ``mbpo_ray.algos`` only talk to the ``Runtime`` interface."""
from mbpo_ray.runtime.base import Runtime
from mbpo_ray.runtime.local import LocalRuntime

__all__ = ["Runtime", "LocalRuntime"]
