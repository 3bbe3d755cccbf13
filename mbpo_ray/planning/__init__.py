"""Planners over learned models: PETS's CEM optimiser and trajectory sampling."""
from mbpo_ray.planning.cem import CEMOptimizer, CEMResult, capped_variance, sample_truncated
from mbpo_ray.planning.trajectory_sampling import PROPAGATIONS, TrajectorySampler

__all__ = ["CEMOptimizer", "CEMResult", "PROPAGATIONS", "TrajectorySampler", "capped_variance",
           "sample_truncated"]
