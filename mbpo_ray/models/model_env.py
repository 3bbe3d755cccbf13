"""The learned model as an environment: one ensemble step, then the termination rule.

Shared by MBPO's branched rollouts (``mbpo_ray.models.rollout``) and PETS's trajectory sampling
(``mbpo_ray.planning.trajectory_sampling``). A step takes a batch of states, actions and, for
every row, the ensemble member to use (the caller draws members: MBPO a random elite per row
and step, PETS by its propagation scheme), and returns the predicted next states and rewards,
the termination flags of the predicted transitions, and which rows are finite.

The termination function is passed in (one per env, ``mbpo_ray.envs.termination_fn``; the rules
are in docs/termination.md): this module never imports the env side. It is applied to every
row, finite or not; termination rules are row-wise, so a caller that drops non-finite rows may
drop their flags too.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

# (obs [B, obs_dim], act [B, act_dim], next_obs [B, obs_dim]) -> terminated [B] (bool); never
# time-limit truncation, which is not a property of the state.
TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# How a step draws from the member's diagonal Gaussian over [reward, delta_obs]:
#   "all"  reward and next state both sampled (MBPO's rollouts, as the paper's released code);
#   "obs"  next state sampled, reward the mean (PETS's trajectory sampling; see
#          mbpo_ray.planning.trajectory_sampling for why the reward is not sampled);
#   "none" both the mean (PETS's expectation propagation).
NOISE = ("all", "obs", "none")


class ModelStep(NamedTuple):
    next_obs: torch.Tensor    # [B, obs_dim]
    reward: torch.Tensor      # [B]
    terminated: torch.Tensor  # [B] bool: the termination rule on (obs, act, next_obs)
    finite: torch.Tensor      # [B] bool: next_obs and reward are all finite


class ModelEnv:
    """``ProbabilisticEnsemble`` (anything with ``sample`` and ``forward_members``) + a
    termination function."""

    def __init__(self, model, termination: TerminationFn):
        self.model, self.termination = model, termination

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, member: torch.Tensor,
             noise: str = "all") -> ModelStep:
        """obs [B, obs_dim], act [B, act_dim], member [B] (ensemble index per row).

        Random draws: "all" one ``randn`` of [B, 1 + obs_dim] (in ``model.sample``), "obs" one
        of [B, obs_dim], "none" none."""
        if noise == "all":
            next_obs, reward = self.model.sample(obs, act, member)
        else:
            mean, logvar = self.model.forward_members(torch.cat([obs, act], dim=-1), member)
            delta, reward = mean[:, 1:], mean[:, 0]
            if noise == "obs":
                delta = delta + torch.randn_like(delta) * (0.5 * logvar[:, 1:]).exp()
            elif noise != "none":
                raise ValueError(f"noise={noise!r}: expected one of {NOISE}")
            next_obs = obs + delta
        terminated = self.termination(obs, act, next_obs)
        finite = torch.isfinite(next_obs).all(dim=-1) & torch.isfinite(reward)
        return ModelStep(next_obs, reward, terminated, finite)

    @torch.no_grad()
    def step_all_members(self, obs: torch.Tensor, act: torch.Tensor, member: torch.Tensor):
        """``step`` with noise "all" from one forward pass of every member (what an uncertainty
        rule needs, mbpo.rollout_uncertainty): (the step of each row's ``member``, every member's
        mean and logvar [E, B, out] in env units). Random draws: one ``randn`` of [B, out]."""
        mean, logvar = self.model(torch.cat([obs, act], dim=-1))
        rows = torch.arange(obs.shape[0], device=obs.device)
        chosen_mean, chosen_logvar = mean[member, rows], logvar[member, rows]
        draw = chosen_mean + torch.randn_like(chosen_mean) * (0.5 * chosen_logvar).exp()
        next_obs, reward = obs + draw[:, 1:], draw[:, 0]
        terminated = self.termination(obs, act, next_obs)
        finite = torch.isfinite(next_obs).all(dim=-1) & torch.isfinite(reward)
        return ModelStep(next_obs, reward, terminated, finite), mean, logvar
