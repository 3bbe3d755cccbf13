from mbpo_ray.agents.sac import SAC, TanhGaussianPolicy

__all__ = ["SAC", "TanhGaussianPolicy"]
