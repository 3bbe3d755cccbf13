"""The global random streams of a run: seeding, saving and restoring them (a checkpoint holds
them, so that a resumed run draws what an uninterrupted one draws), and a seed group's per-seed
streams swapped in while that seed works (docs/seed_groups.md)."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LaneRandom:
    """One seed's global random state, swapped in while the seed works."""

    def __init__(self, state: Dict[str, Any], cuda: bool):
        self.state, self.cuda = state, cuda

    @contextmanager
    def active(self) -> Iterator[None]:
        """Python, NumPy, torch and CUDA streams (env steps, fits, rollouts, evaluation)."""
        set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()

    @contextmanager
    def torch_active(self) -> Iterator[None]:
        """Only torch's streams: the draws of one agent update (batch indices, policy noise)."""
        torch.set_rng_state(self.state["torch"])
        if self.cuda:
            torch.cuda.set_rng_state_all(self.state["cuda"])
        try:
            yield
        finally:
            self.state["torch"] = torch.get_rng_state()
            if self.cuda:
                self.state["cuda"] = torch.cuda.get_rng_state_all()
