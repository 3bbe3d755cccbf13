"""MBPO (and, with ``algo: sac``, the same SAC without model data) as an ``Algorithm``: the
MBPO loop over the runtime ``cfg.runtime`` names, step by step (``mbpo_loop``) or, with the
Ray runtime's ``ray.schedule: async``, overlapped (``mbpo_async``)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from mbpo_ray.algos.mbpo_async import AsyncMBPOLoop
from mbpo_ray.algos.mbpo_loop import MBPOLoop
from mbpo_ray.config import TrainConfig
from mbpo_ray.runtime.factory import make_runtime


class MBPO:
    def __init__(self, cfg: TrainConfig, device, run_path=None):
        self.cfg = cfg
        self.title = "SAC" if cfg.algo == "sac" else "MBPO"
        self.runtime = self.make_runtime(cfg, device)
        overlapped = cfg.runtime == "ray" and cfg.ray.schedule == "async"
        self.loop_class = AsyncMBPOLoop if overlapped else MBPOLoop
        if cfg.runtime == "ray":
            self.title += f" (ray, {cfg.ray.schedule})"
        self.loop = self.loop_class(cfg, self.runtime)

    def make_runtime(self, cfg: TrainConfig, device):
        return make_runtime(cfg, device)

    @property
    def env_steps(self) -> int:
        return self.loop.state.env_steps

    @property
    def last_eval(self) -> Optional[float]:
        return self.loop.state.last_eval

    def step(self) -> Optional[Dict[str, Any]]:
        return self.loop.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"loop": self.loop.state_dict(), "runtime": self.runtime.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.runtime.load_state_dict(state["runtime"])
        self.loop = self.loop_class(self.cfg, self.runtime, self.loop_class.state_from_dict(state["loop"]))

    def close(self) -> None:
        self.runtime.close()
