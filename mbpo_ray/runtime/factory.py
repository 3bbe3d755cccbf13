"""The one place that picks a runtime class: algorithms ask for a runtime here and talk to it
through ``mbpo_ray.runtime.base`` only (docs/architecture.md)."""
from __future__ import annotations

from typing import Optional

from mbpo_ray.runtime.base import AgentBuilder, Runtime


def make_runtime(cfg, device, make_agent: Optional[AgentBuilder] = None, with_model: bool = True) -> Runtime:
    """The runtime of ``cfg.runtime`` for one run.

    ``device``: this process's device (``mbpo_ray.devices.resolve_device``); Ray actors resolve
    their own from ``cfg.device`` and the GPUs Ray assigned them. ``make_agent``: the learner to
    train (default SAC). ``with_model``: whether the run needs a dynamics model and D_model
    (algorithms that learn from real data only pass False)."""
    if cfg.runtime == "ray":
        if make_agent is not None or not with_model:
            raise ValueError("the Ray runtime trains SAC with a dynamics model (algo mbpo or sac)")
        from mbpo_ray.runtime.ray import RayRuntime

        return RayRuntime(cfg)
    from mbpo_ray.runtime.local import AgentRuntime, LocalRuntime

    return (LocalRuntime if with_model else AgentRuntime)(cfg, device, make_agent)
