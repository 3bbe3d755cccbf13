"""The epoch record every algorithm writes to metrics.jsonl, and the seeds of its evaluation
episodes: written once here (docs/metrics.md lists the keys)."""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, Sequence

import numpy as np


def epoch_of(env_steps: int, epoch_length: int) -> int:
    """The epoch (from 0) that the ``env_steps``-th env step belongs to."""
    return (env_steps - 1) // epoch_length


def eval_seed(seed: int, epoch: int, eval_episodes: int) -> int:
    """Reset seed of an epoch's first evaluation episode (the next ones count up from it): a
    fresh range per epoch and per run seed, disjoint from the training env's seed."""
    return 1_000_000 + seed * 10_000 + epoch * eval_episodes


def epoch_record(env_steps: int, epoch_length: int, episode_returns: Sequence[float],
                 warmup_steps: int) -> Dict[str, Any]:
    """The head of an epoch's record: ``env_steps`` (all real env steps), ``learning_steps``
    (those after the algorithm's random warm-up of ``warmup_steps``, the x-axis of the MBPO
    paper's released code), ``epoch`` and, when training episodes finished in the epoch, their
    mean return and count."""
    record: Dict[str, Any] = {"env_steps": env_steps, "learning_steps": max(0, env_steps - warmup_steps),
                              "epoch": epoch_of(env_steps, epoch_length)}
    if len(episode_returns):
        record["train/episode_return"] = float(np.mean(episode_returns))
        record["train/episodes"] = len(episode_returns)
    return record


class EpochTimer:
    """Wall-clock of one epoch and of its phases, for the record's perf/ keys."""

    def __init__(self, phases: Iterable[str], env_steps: int):
        self.phases = tuple(phases)
        self.restart(env_steps)

    def restart(self, env_steps: int) -> None:
        self.seconds = dict.fromkeys(self.phases, 0.0)
        self.start, self.start_steps = time.perf_counter(), env_steps

    def timed(self, phase: str, fn: Callable, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.add(phase, time.perf_counter() - t0)
        return out

    def add(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` to ``phase`` (work timed elsewhere, e.g. a seed group's share)."""
        self.seconds[phase] += seconds

    def perf(self, env_steps: int) -> Dict[str, float]:
        """perf/sps, perf/epoch_seconds and perf/<phase>_seconds of the epoch now ending;
        starts the next epoch's clock."""
        wall = time.perf_counter() - self.start
        out = {"perf/sps": (env_steps - self.start_steps) / max(wall, 1e-9), "perf/epoch_seconds": wall}
        out.update({f"perf/{phase}_seconds": secs for phase, secs in self.seconds.items()})
        self.restart(env_steps)
        return out
