"""Preallocated ring buffers of transitions on the training device.

A transition is stored as one row of a single [capacity, width] tensor, so a batch is one
gather; the row layout is ``mbpo_ray.data.rows.RowLayout``'s. ``terminated`` never includes
time-limit truncation.
"""
from __future__ import annotations

from typing import Dict

import torch

from mbpo_ray.data.rows import Batch, RowLayout


class ReplayBuffer:
    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu"):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.layout = RowLayout(obs_dim, act_dim)
        self.width = self.layout.width
        self.device = torch.device(device)
        self.storage = torch.zeros(capacity, self.width, device=self.device)
        self.ptr = 0   # next row to write
        self.size = 0  # rows holding data

    @property
    def capacity(self) -> int:
        return self.storage.shape[0]

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, rew, next_obs, terminated) -> None:
        """Add a batch of transitions (leading dim B; a single transition may omit it); tensors,
        numpy arrays and Python numbers are accepted."""
        def field(x):
            return torch.as_tensor(x, dtype=torch.float32, device=self.device)
        self.add_rows(self.layout.pack(field(obs), field(act), field(rew), field(next_obs),
                                       field(terminated)))

    def add_rows(self, rows: torch.Tensor) -> None:
        """Add rows [B, width] in ``self.layout`` (copied into the storage)."""
        n = rows.shape[0]
        if n == 0:
            return
        if n >= self.capacity:  # only the newest rows fit
            self.storage.copy_(rows[-self.capacity:])
            self.ptr, self.size = 0, self.capacity
            return
        first = min(n, self.capacity - self.ptr)
        self.storage[self.ptr:self.ptr + first] = rows[:first]
        if first < n:  # wrap around
            self.storage[: n - first] = rows[first:]
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def rows_in_order(self) -> torch.Tensor:
        """All stored rows, oldest first."""
        if self.size < self.capacity:
            return self.storage[: self.size]
        return torch.cat([self.storage[self.ptr:], self.storage[: self.ptr]])

    def resize(self, capacity: int) -> None:
        """Reallocate to ``capacity`` rows, keeping the newest ones that fit."""
        if capacity == self.capacity:
            return
        kept = self.rows_in_order()[-capacity:].clone()
        self.storage = torch.zeros(capacity, self.width, device=self.device)
        self.ptr, self.size = 0, 0
        self.add_rows(kept)

    def split(self, rows: torch.Tensor) -> Batch:
        return self.layout.split(rows)

    def sample_rows(self, n: int) -> torch.Tensor:
        idx = torch.randint(self.size, (n,), device=self.device)
        return self.storage[idx]

    def sample(self, n: int) -> Batch:
        return self.split(self.sample_rows(n))

    def all(self) -> Batch:
        """Every stored transition, in storage order (not oldest first once wrapped)."""
        return self.split(self.storage[: self.size])

    def state_dict(self) -> Dict:
        """The rows in storage order with the write position: a loaded buffer maps every index to
        the row it held, so that its samples after a resume are the ones it would have drawn
        (a wrapped buffer saved oldest first would not)."""
        return {"rows": self.storage[: self.size].cpu().clone(), "capacity": self.capacity, "ptr": self.ptr}

    @staticmethod
    def saved_rows_in_order(state: Dict) -> torch.Tensor:
        """The rows of a ``state_dict``, oldest first."""
        rows, ptr = state["rows"], state.get("ptr", 0)
        return torch.cat([rows[ptr:], rows[:ptr]]) if rows.shape[0] == state["capacity"] else rows

    def load_state_dict(self, state: Dict) -> None:
        self.storage = torch.zeros(state["capacity"], self.width, device=self.device)
        self.ptr, self.size = 0, 0
        self.add_rows(state["rows"].to(self.device))
        if "ptr" in state:  # checkpoints before it held the rows oldest first (ptr 0 after loading)
            self.ptr = state["ptr"]


def sample_mixed(real: ReplayBuffer, model: ReplayBuffer, batch_size: int, real_ratio: float) -> Batch:
    """A batch with ``real_ratio`` of its rows from D_env and the rest from D_model (all real
    while D_model is still empty)."""
    n_real = int(batch_size * real_ratio) if len(model) > 0 else batch_size
    if n_real >= batch_size:
        return real.sample(batch_size)
    if n_real == 0:
        return model.sample(batch_size)
    return real.split(torch.cat([real.sample_rows(n_real), model.sample_rows(batch_size - n_real)]))


def d_env_capacity(cfg) -> int:
    """D_env holds every transition of the run, up to ``sac.replay_size`` (a TrainConfig)."""
    return min(cfg.sac.replay_size, cfg.total_steps)


def model_buffer_capacity(retain_epochs: int, epoch_length: int, model_train_freq: int,
                          rollout_batch_size: int, rollout_length: int) -> int:
    """D_model holds the rollouts of the last ``retain_epochs`` epochs: retain_epochs x
    rollouts per epoch x k rows (the MBPO paper's released code; defaults in
    docs/hyperparameters.md)."""
    rollouts_per_epoch = epoch_length * rollout_batch_size // model_train_freq
    return max(1, retain_epochs * rollouts_per_epoch * rollout_length)
