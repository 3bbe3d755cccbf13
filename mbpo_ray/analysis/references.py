"""Random and reference returns per env: normalised score = (return - random) / (reference - random).

The one place in code for these numbers. Their sources, and how the random returns were measured,
are in docs/published_results.md#normalised-scores; a change here goes there too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Reference:
    random: float
    """Mean return of a uniform-random policy (normalised score 0)."""
    reference: float
    """The return that scores 1."""
    source: str
    """Where the reference return comes from (one line; details in docs/published_results.md)."""


# random: `python -m mbpo_ray.analysis.random_returns --episodes 100` (gymnasium v5 envs as
# mbpo_ray.envs makes them, uniform-random actions, 100 episodes, seed 0).
# reference: MBPO's return at the end of its curve in the paper's Figure 2 (the middle of the range
# read off the curve, docs/published_results.md#mbpo-curves); for the two pendulums the largest
# return the env can give.
REFERENCES: Dict[str, Reference] = {
    "Hopper-v5": Reference(16.7, 3350.0, "MBPO paper, Figure 2: 3,300-3,400 at 120k steps"),
    "Walker2d-v5": Reference(1.8, 4750.0, "MBPO paper, Figure 2: 4,500-5,000 at 300k steps"),
    "HalfCheetah-v5": Reference(-282.5, 10500.0, "MBPO paper, Figure 2: 10,000-11,000 at 400k steps"),
    "Ant-v5": Reference(-48.0, 5750.0, "MBPO paper, Figure 2: 5,500-6,000 at 300k steps"),
    "Humanoid-v5": Reference(112.6, 5500.0, "MBPO paper, Figure 2: 5,000-6,000 at 300k steps"),
    "InvertedPendulum-v5": Reference(5.2, 1000.0, "the maximum: reward 1 per step, 1,000 steps"),
    "InvertedDoublePendulum-v5": Reference(
        49.1, 9360.0, "the maximum: 10 - (1.2 - 2)^2 = 9.36 per step upright at x = 0, 1,000 steps"),
}
