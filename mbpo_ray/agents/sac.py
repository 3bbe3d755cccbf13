"""Soft actor-critic with automatic temperature (Haarnoja et al. 2018).

Everything but the critic target is the shared ``ActorCritic`` (policy, twin Q as one
StackedMLP, temperature, optimizer, update, state); SAC adds the plain one-step TD target over
the min of its two target critics.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from mbpo_ray.agents.actor_critic import ActorCritic, TanhGaussianPolicy
from mbpo_ray.config import SACConfig

__all__ = ["METRIC_NAMES", "SAC", "TanhGaussianPolicy"]

METRIC_NAMES = ("train/q_loss", "train/policy_loss", "train/alpha_loss", "train/alpha",
                "train/entropy", "train/q_mean")


class SAC(ActorCritic):
    metric_names = METRIC_NAMES

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device):
        super().__init__(obs_dim, act_dim, cfg, num_q=2)
        self.cfg = cfg
        self._setup_training(device)

    def draw_noise(self, batch_size: int) -> torch.Tensor:
        """[2, B, act_dim]: the draw of a' ~ pi(s') for the target, then of a ~ pi(s) for the
        policy loss (drawn one after the other, as inline draws would be)."""
        shape = (batch_size, self.act_dim)
        return torch.stack([torch.randn(shape, device=self.device), torch.randn(shape, device=self.device)])

    def _losses(self, obs, act, rew, next_obs, done, noise) -> Tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_act, next_logp = self.policy(next_obs, noise[0])
            next_q = self.q_target(torch.cat([next_obs, next_act], -1)).squeeze(-1).min(0).values
            target = rew + cfg.discount * (1.0 - done) * (next_q - alpha * next_logp)
        q = self.q(torch.cat([obs, act], -1)).squeeze(-1)  # [2, B]
        q_loss = 0.5 * ((q - target) ** 2).mean(dim=1).sum()
        # All three losses are built from the same parameters before any step, as in the
        # softlearning SAC that MBPO's released code runs.
        policy_loss, alpha_loss, logp = self._actor_losses(obs, alpha, noise[1])
        total = q_loss + policy_loss + alpha_loss
        metrics = torch.stack([q_loss, policy_loss, alpha_loss, alpha, -logp.mean(), q.mean()]).detach()
        return total, metrics

    @staticmethod
    def metrics_to_dict(metrics: torch.Tensor) -> Dict[str, float]:  # type: ignore[override]
        """Also callable on the class: ``SAC.metrics_to_dict(metrics)``."""
        return dict(zip(METRIC_NAMES, metrics.tolist()))
