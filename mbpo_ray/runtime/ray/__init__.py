"""The Ray runtime: one run as a group of actors (docs/architecture.md). The only place, with
RLlib's reference algorithm and the sweep layer, that imports Ray. ``RayRuntime`` is loaded on
first use, so that ``capacity`` and ``cluster`` load without torch."""

__all__ = ["RayRuntime"]


def __getattr__(name):
    if name == "RayRuntime":
        from mbpo_ray.runtime.ray.driver import RayRuntime

        return RayRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
