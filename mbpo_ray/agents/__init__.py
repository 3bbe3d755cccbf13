from mbpo_ray.agents.actor_critic import ActorCritic, TanhGaussianPolicy
from mbpo_ray.agents.sac import SAC

__all__ = ["ActorCritic", "SAC", "TanhGaussianPolicy"]
