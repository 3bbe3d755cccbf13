"""What the dynamics ensemble is fitted to: the one place that turns transitions into
(inputs, targets).

inputs = [obs | act] and targets = [reward | next_obs - obs]: each member predicts a Gaussian
over the reward and the change of state (the MBPO paper's model, after PETS; next_obs = obs +
delta). Actions are the policy's, in [-1, 1].
"""
from __future__ import annotations

from typing import Tuple

import torch

from mbpo_ray.data.rows import RowLayout


def fit_data(obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """obs, next_obs [N, obs_dim], act [N, act_dim], rew [N] -> inputs [N, obs_dim + act_dim],
    targets [N, 1 + obs_dim]."""
    return torch.cat([obs, act], dim=-1), torch.cat([rew[:, None], next_obs - obs], dim=-1)


def fit_data_from_rows(rows: torch.Tensor, layout: RowLayout) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fit_data`` of transition rows [N, layout.width]."""
    obs, act, rew, next_obs, _ = layout.split(rows)
    return fit_data(obs, act, rew, next_obs)


def fit_data_from_buffer(buffer) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fit_data`` of every transition stored in a ReplayBuffer (in its storage order)."""
    obs, act, rew, next_obs, _ = buffer.all()
    return fit_data(obs, act, rew, next_obs)
