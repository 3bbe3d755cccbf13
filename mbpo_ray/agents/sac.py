"""Soft actor-critic with automatic temperature (Haarnoja et al. 2018).

Everything but the update is the shared ``ActorCritic`` (policy, twin Q as one StackedMLP,
temperature, optimizer, state); SAC's losses (the plain one-step TD target over the min of its two
target critics, the policy and temperature losses) and their gradients are written out in
``mbpo_ray.agents.sac_update`` without autograd, which this learner and a seed group's stacked
learners share.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from mbpo_ray.agents.actor_critic import ActorCritic, TanhGaussianPolicy
from mbpo_ray.agents.sac_update import parameter_names, sac_gradients
from mbpo_ray.config import SACConfig

__all__ = ["METRIC_NAMES", "SAC", "TanhGaussianPolicy"]

METRIC_NAMES = ("train/q_loss", "train/policy_loss", "train/alpha_loss", "train/alpha",
                "train/entropy", "train/q_mean")


class SAC(ActorCritic):
    metric_names = METRIC_NAMES

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device):
        super().__init__(obs_dim, act_dim, cfg, num_q=cfg.num_critics)
        # REDQ (docs/mbpo_plus.md#critic-normalisation): a random subset of the target critics
        self.redq = cfg.critic_subset < cfg.num_critics
        self.policy_q_reduction = "mean" if self.redq else "min"
        self.cfg = cfg
        layers = cfg.num_hidden_layers + 1
        self._train_names, self._target_names = parameter_names(layers, layers)
        self._gradients = sac_gradients
        self._stack_of_one = None  # the parameters as a seed stack of one, made on the first update
        self._setup_training(device)

    def draw_noise(self, batch_size: int) -> torch.Tensor:
        """[2, B, act_dim]: the draw of a' ~ pi(s') for the target, then of a ~ pi(s) for the
        policy loss (drawn one after the other, as inline draws would be)."""
        shape = (batch_size, self.act_dim)
        return torch.stack([torch.randn(shape, device=self.device), torch.randn(shape, device=self.device)])

    def draw_subset(self) -> Optional[torch.Tensor]:
        """REDQ: ``sac.critic_subset`` of the ``sac.num_critics`` target critics, drawn anew each
        update; None for SAC (no draw)."""
        if not self.redq:
            return None
        subset = torch.zeros(self.sac_cfg.num_critics, dtype=torch.bool, device=self.device)
        subset[torch.randperm(self.sac_cfg.num_critics, device=self.device)[:self.sac_cfg.critic_subset]] = True
        return subset

    def gradient_options(self) -> Dict[str, bool]:
        """``sac_gradients``' keyword options from the config (the networks' LayerNorms)."""
        return {"critic_layer_norm": self.sac_cfg.critic_layer_norm,
                "policy_layer_norm": self.sac_cfg.policy_layer_norm}

    def _compile(self) -> None:
        self._gradients = torch.compile(sac_gradients)

    def _step(self, obs, act, rew, next_obs, done, noise, subset=None) -> torch.Tensor:
        """One update (``ActorCritic._step``'s contract) from the written-out gradients: the
        parameters as a seed stack of one (views, no copies), the gradients into ``.grad``."""
        with torch.no_grad():
            if self._stack_of_one is None:
                # views: the parameters change in place (Adam, load_state_dict), never move
                named = dict(self.named_parameters())
                self._stack_of_one = ({n: named[n].unsqueeze(0) for n in self._train_names},
                                      {n: named[n].unsqueeze(0) for n in self._target_names},
                                      [named[n] for n in self._train_names])
            params, target, trained = self._stack_of_one
            grads, metrics = self._gradients(
                params, target, self.target_entropy.unsqueeze(0), obs.unsqueeze(0), act.unsqueeze(0),
                rew.unsqueeze(0), next_obs.unsqueeze(0), done.unsqueeze(0), noise.unsqueeze(0), self.cfg.discount,
                None if subset is None else subset.unsqueeze(0), **self.gradient_options())
            for name, p in zip(self._train_names, trained):
                p.grad = grads[name][0]
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target_params, self._q_params, self.sac_cfg.tau)
        return metrics[0]

    @staticmethod
    def metrics_to_dict(metrics: torch.Tensor) -> Dict[str, float]:  # type: ignore[override]
        """Also callable on the class: ``SAC.metrics_to_dict(metrics)``."""
        return dict(zip(METRIC_NAMES, metrics.tolist()))
