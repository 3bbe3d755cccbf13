"""perf/ metrics of the Ray runtime: per-actor throughput and weight-version lags."""
from __future__ import annotations

from typing import Dict, List

import numpy as np


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

    def metrics(self) -> Dict[str, float]:
        """The epoch's perf/ metrics (docs/metrics.md); resets the counters."""
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
