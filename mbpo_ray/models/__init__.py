from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.trainer import EnsembleTrainer

__all__ = ["ProbabilisticEnsemble", "EnsembleTrainer"]
