"""The interface every algorithm offers to ``mbpo_ray.train``.

An algorithm owns everything of its run (envs, networks, buffers). ``train`` drives it step by
step, writes its epoch records to metrics.jsonl and its ``state_dict`` into checkpoint.pt, so
that every algorithm has the same run directory, the same metric keys (``env_steps``,
``epoch``, ``eval/return_mean`` ...) and the same stop/resume behaviour.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol


class Algorithm(Protocol):
    title: str  # for progress bars and plots, e.g. "MBPO" or "PETS (ts-inf)"

    @property
    def env_steps(self) -> int:
        """Real env steps taken so far (random warm-up steps included)."""

    @property
    def last_eval(self) -> Optional[float]:
        """The latest eval/return_mean, or None before the first evaluation."""

    def step(self) -> Optional[Dict[str, Any]]:
        """Advance by at least one env step. Returns the metrics record (with ``env_steps``,
        ``epoch`` and ``eval/return_mean``) when an epoch, or the run, ended."""

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly where the run is."""

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release what the algorithm holds outside this process (actors, workers)."""
