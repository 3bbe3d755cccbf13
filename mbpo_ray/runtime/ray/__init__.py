"""The Ray runtime: one run as a group of actors (docs/architecture.md). The only place, with
RLlib's reference algorithm, that imports Ray."""
from mbpo_ray.runtime.ray.driver import RayRuntime

__all__ = ["RayRuntime"]
