from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.model_env import ModelEnv, ModelStep, TerminationFn
from mbpo_ray.models.targets import fit_data, fit_data_from_rows
from mbpo_ray.models.trainer import EnsembleTrainer

__all__ = ["EnsembleTrainer", "ModelEnv", "ModelStep", "ProbabilisticEnsemble", "TerminationFn",
           "fit_data", "fit_data_from_rows"]
