"""Per-update learner metrics, summed on the device (no host sync in the hot loop) and read as
their mean once per epoch."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch


class MetricMean:
    def __init__(self, names: Sequence[str], device):
        self.names = tuple(names)
        self.device = device
        self.sum = torch.zeros(len(self.names), device=device)
        self.count = 0

    def add(self, metrics: torch.Tensor) -> None:
        """One update's metrics tensor (order: ``names``)."""
        self.sum += metrics
        self.count += 1

    def read(self) -> Dict[str, float]:
        """The mean since the last read, plus ``train/updates``; empty when there was none."""
        if self.count == 0:
            return {}
        out: Dict[str, Any] = dict(zip(self.names, (self.sum / self.count).tolist()))
        out["train/updates"] = self.count
        self.sum.zero_()
        self.count = 0
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {"metric_sum": self.sum.cpu(), "metric_count": self.count}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sum = state["metric_sum"].to(self.device)
        self.count = state["metric_count"]
