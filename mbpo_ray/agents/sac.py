"""Soft actor-critic with automatic temperature (Haarnoja et al. 2018).

Twin Q is one StackedMLP (one batched matmul for both critics); the target critic follows
with one fused lerp; the update is a pure tensor function that returns its metrics as one
tensor, so nothing inside it waits on the host. Actions live in [-1, 1]; the env wrapper
rescales them to the env's bounds.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.config import SACConfig
from mbpo_ray.nn import StackedMLP, make_adam

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
METRIC_NAMES = ("train/q_loss", "train/policy_loss", "train/alpha_loss", "train/alpha",
                "train/entropy", "train/q_mean")


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    mods, dim = [], in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int):
        super().__init__()
        self.net = _mlp(obs_dim, hidden, layers, 2 * act_dim)

    def forward(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample a reparameterised action in [-1, 1] and its log-probability."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        # log N(u; mean, std) - log(1 - tanh(u)^2), the latter in its stable softplus form.
        log_prob = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return action, log_prob

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if deterministic:
            mean, _ = self.net(obs).chunk(2, dim=-1)
            return torch.tanh(mean)
        return self(obs)[0]


class SAC(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device):
        super().__init__()
        self.cfg = cfg
        self.policy = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden_width, cfg.num_hidden_layers)
        self.q = StackedMLP(2, obs_dim + act_dim, [cfg.hidden_width] * cfg.num_hidden_layers, 1)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(cfg.init_log_alpha)))
        entropy = cfg.target_entropy if cfg.target_entropy is not None else -float(act_dim)
        self.register_buffer("target_entropy", torch.tensor(float(entropy)))
        self.to(device)
        self.device = device
        # One Adam over policy, critics and temperature: the three losses touch disjoint
        # parameters and share lr and betas, so this equals three optimizers, in fewer kernels.
        params = [*self.policy.parameters(), *self.q.parameters(), self.log_alpha]
        self.optimizer = make_adam(params, cfg.learning_rate)
        self._q_params = list(self.q.parameters())
        self._q_target_params = list(self.q_target.parameters())
        self._losses = torch.compile(self._losses) if cfg.compile else self._losses

    def _losses(self, obs, act, rew, next_obs, done) -> Tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_act, next_logp = self.policy(next_obs)
            next_q = self.q_target(torch.cat([next_obs, next_act], -1)).squeeze(-1).min(0).values
            target = rew + cfg.discount * (1.0 - done) * (next_q - alpha * next_logp)
        q = self.q(torch.cat([obs, act], -1)).squeeze(-1)  # [2, B]
        q_loss = 0.5 * ((q - target) ** 2).mean(dim=1).sum()
        # All three losses are built from the same parameters before any step, as in the
        # softlearning SAC that MBPO's released code runs; Q is evaluated with detached
        # parameters so the policy loss differentiates only into the actions.
        new_act, logp = self.policy(obs)
        q_pi = self.q(torch.cat([obs, new_act], -1), detach_params=True).squeeze(-1).min(0).values
        policy_loss = (alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        total = q_loss + policy_loss + alpha_loss
        metrics = torch.stack([q_loss, policy_loss, alpha_loss, alpha, -logp.mean(), q.mean()]).detach()
        return total, metrics

    def update(self, obs, act, rew, next_obs, done) -> torch.Tensor:
        """One gradient step on every loss and the target update; returns metrics as one
        tensor (order: METRIC_NAMES), read only when logged."""
        total, metrics = self._losses(obs, act, rew, next_obs, done)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target_params, self._q_params, self.cfg.tau)
        return metrics

    @staticmethod
    def metrics_to_dict(metrics: torch.Tensor) -> Dict[str, float]:
        return dict(zip(METRIC_NAMES, metrics.tolist()))

    def full_state_dict(self):
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state_dict(self, state):
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
