"""Bootstrap ensemble of probabilistic dynamics networks (the MBPO paper's model, after PETS;
sizes and defaults in docs/hyperparameters.md).

Each member maps standardised (obs, action) to a diagonal Gaussian over [reward, delta_obs];
next_obs = obs + delta. All members share one StackedMLP, so training evaluates the whole
ensemble with one batched matmul per layer, while a rollout evaluates only the member that
each sample drew.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.config import ModelConfig
from mbpo_ray.nn import StackedMLP


class ProbabilisticEnsemble(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, cfg: ModelConfig):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.num_members, self.num_elites = cfg.num_members, cfg.num_elites
        self.in_dim, self.out_dim = obs_dim + act_dim, obs_dim + 1
        self.net = StackedMLP(cfg.num_members, self.in_dim, [cfg.hidden_width] * cfg.num_hidden_layers,
                              2 * self.out_dim, activation="silu", init="truncated_normal")
        # Learned soft bounds on the log-variance, shared by the members as in the released code.
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), cfg.init_max_logvar))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), cfg.init_min_logvar))
        self.register_buffer("input_mean", torch.zeros(self.in_dim))
        self.register_buffer("input_std", torch.ones(self.in_dim))
        self.register_buffer("elite_idx", torch.arange(cfg.num_elites))
        # model.normalize_targets (docs/mbpo_plus.md#scale-aware-model-targets): the members
        # predict standardised [reward, delta]; these turn it back into env units.
        self.normalize_targets = cfg.normalize_targets
        self.register_buffer("target_mean", torch.zeros(self.out_dim))
        self.register_buffer("target_std", torch.ones(self.out_dim))
        self._init_logvar = (cfg.init_max_logvar, cfg.init_min_logvar)

    # --- normalisation ---
    def set_normalizer(self, inputs: torch.Tensor) -> None:
        std = inputs.std(dim=0, unbiased=False)
        std = torch.where(std < 1e-12, torch.ones_like(std), std)
        self.input_mean.copy_(inputs.mean(dim=0))
        self.input_std.copy_(std)

    def set_target_normalizer(self, targets: torch.Tensor) -> None:
        """The per-dimension mean and std of the fit's targets (model.normalize_targets)."""
        std = targets.std(dim=0, unbiased=False)
        self.target_mean.copy_(targets.mean(dim=0))
        self.target_std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def scale_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets in the units the members predict (standardised with model.normalize_targets)."""
        return (targets - self.target_mean) / self.target_std if self.normalize_targets else targets

    def _to_env_units(self, mean: torch.Tensor, logvar: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.normalize_targets:
            return mean, logvar
        return mean * self.target_std + self.target_mean, logvar + 2 * self.target_std.log()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh weights and log-variance bounds, as at construction (mbpo.model_reset_every); the
        normalisers and elites stay until the next fit sets them."""
        self.net.reset_parameters()
        self.max_logvar.fill_(self._init_logvar[0])
        self.min_logvar.fill_(self._init_logvar[1])

    def _split(self, out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = out.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    # --- all members (training, holdout) ---
    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """inputs: raw [E, B, in] or [B, in] -> mean, logvar of [reward, delta_obs], [E, B, out]."""
        return self._to_env_units(*self.forward_scaled(inputs))

    def forward_scaled(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``forward`` in the units the members predict (``scale_targets``'): what the fit's loss
        compares with the scaled targets."""
        return self._split(self.net(self._normalize(inputs)))

    # --- one member per sample (rollouts) ---
    def forward_members(self, inputs: torch.Tensor, member: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """inputs [B, in], member [B] (int) -> mean, logvar [B, out], computing for each
        sample only the member it uses: samples are grouped by member, one matmul per group."""
        x = self._normalize(inputs)
        order = torch.argsort(member)
        counts = torch.bincount(member, minlength=self.num_members).tolist()
        pieces = []
        for m, chunk in enumerate(x[order].split(counts)):
            if counts[m]:
                pieces.append(self.net.forward_member(chunk, m))
        out = torch.empty(x.shape[0], 2 * self.out_dim, device=x.device, dtype=x.dtype)
        out[order] = torch.cat(pieces)
        return self._to_env_units(*self._split(out))

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, act: torch.Tensor, member: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw (next_obs, reward) from each sample's member's Gaussian."""
        mean, logvar = self.forward_members(torch.cat([obs, act], dim=-1), member)
        draw = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return obs + draw[:, 1:], draw[:, 0]

    @torch.no_grad()
    def disagreement(self, obs: torch.Tensor, act: torch.Tensor, elites_only: bool = True,
                     per_row: bool = False) -> torch.Tensor:
        """Epistemic spread at (obs, act) [B, ...]: the variance across the elites (all members
        with ``elites_only=False``) of their mean predictions of [reward, obs change], averaged
        over those outputs; one value per row with ``per_row``, else the mean over rows (a 0-d
        tensor). Target units squared, as model/holdout_mse: a calibrated ensemble's disagreement
        is of the order of its error (docs/diagnostics.md)."""
        mean, _ = self(torch.cat([obs, act], dim=-1))  # [E, B, 1 + obs_dim]
        if elites_only:
            mean = mean[self.elite_idx]
        spread = mean.var(dim=0, unbiased=False).mean(dim=-1)  # [B]
        return spread if per_row else spread.mean()

    def random_elites(self, n: int, device=None) -> torch.Tensor:
        pick = torch.randint(self.num_elites, (n,), device=device or self.elite_idx.device)
        return self.elite_idx[pick]
