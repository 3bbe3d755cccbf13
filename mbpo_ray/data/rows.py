"""The transition row: the one place that knows how a transition is laid out.

A transition is one float32 row ``[obs | act | reward | next_obs | terminated]`` of width
``2 * obs_dim + act_dim + 2``. Replay buffers store these rows in one [capacity, width] tensor
(a batch is one gather), Ray actors pass them between processes as numpy arrays, and model
rollouts write them straight to D_model. ``terminated`` is 1.0 for a real termination and never
for time-limit truncation (docs/termination.md).

Everything else reads and writes rows through ``RowLayout``: ``pack`` (torch), ``pack_numpy``
(numpy, for env steps) and ``split``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class RowLayout:
    """Column positions of a transition row for ``obs_dim`` and ``act_dim``.

    ``obs``, ``act`` and ``next_obs`` are slices and ``rew`` and ``terminated`` column indices,
    so ``rows[:, layout.obs]`` is [B, obs_dim] and ``rows[:, layout.rew]`` is [B]."""

    __slots__ = ("obs_dim", "act_dim", "width", "obs", "act", "rew", "next_obs", "terminated")

    def __init__(self, obs_dim: int, act_dim: int):
        o, a = int(obs_dim), int(act_dim)
        self.obs_dim, self.act_dim = o, a
        self.width = 2 * o + a + 2
        self.obs = slice(0, o)
        self.act = slice(o, o + a)
        self.rew = o + a
        self.next_obs = slice(o + a + 1, 2 * o + a + 1)
        self.terminated = 2 * o + a + 1

    def __repr__(self) -> str:
        return f"RowLayout(obs_dim={self.obs_dim}, act_dim={self.act_dim})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RowLayout) and (self.obs_dim, self.act_dim) == (other.obs_dim, other.act_dim)

    def __hash__(self) -> int:
        return hash((self.obs_dim, self.act_dim))

    def pack(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor,
             terminated: torch.Tensor) -> torch.Tensor:
        """Rows [B, width] from tensors on one device: obs/next_obs [B, obs_dim], act
        [B, act_dim], rew and terminated [B] (bool or float); one transition may omit the batch
        dim. The rows take ``obs``'s dtype; one ``torch.cat``, no other copy."""
        return torch.cat([
            obs.reshape(-1, self.obs_dim),
            act.reshape(-1, self.act_dim),
            rew.reshape(-1, 1),
            next_obs.reshape(-1, self.obs_dim),
            terminated.reshape(-1, 1).to(obs.dtype),
        ], dim=1)

    def pack_numpy(self, obs, act, rew, next_obs, terminated) -> np.ndarray:
        """A float32 numpy row [width] from one env step (obs/act/next_obs array-likes, scalar
        reward and terminated flag), or rows [B, width] from batched arrays. Each field is cast
        to float32 on assignment (the same rounding as casting the concatenation)."""
        obs = np.asarray(obs)
        row = np.empty(obs.shape[:-1] + (self.width,), np.float32)
        row[..., self.obs] = obs
        row[..., self.act] = act
        row[..., self.rew] = rew
        row[..., self.next_obs] = next_obs
        row[..., self.terminated] = terminated
        return row

    def split(self, rows: torch.Tensor) -> Batch:
        """(obs, act, rew, next_obs, terminated) views of rows [B, width]; rew and terminated
        are [B]."""
        return (rows[:, self.obs], rows[:, self.act], rows[:, self.rew], rows[:, self.next_obs],
                rows[:, self.terminated])
