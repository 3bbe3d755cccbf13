"""Planners over learned models: the CEM optimiser of PETS."""
from mbpo_ray.planning.cem import CEMOptimizer, CEMResult, capped_variance, sample_truncated

__all__ = ["CEMOptimizer", "CEMResult", "capped_variance", "sample_truncated"]
