"""The diagnostics that training logs every epoch (docs/diagnostics.md#live-metrics; keys in
docs/metrics.md). Each is cheap and draws no random numbers, so a run's trajectory, and a
resumed run's bit-identity, are the same with them as without them.

* ``elite_mse``: one-step error of the model's mean prediction on given transitions (the
  runtimes pass the real transitions collected since the previous fit: data the model has not
  been trained on, from the newest policy: the paper's eps_m' measured live).
* ``ProbabilisticEnsemble.disagreement`` (the models' own): the spread of the elites' mean
  predictions (epistemic uncertainty), measured by ``branched_rollout`` at the start states of
  each rollout batch.
* ``BehaviorLog`` and ``gaussian_kl``: the policy's shift from the policy that collected the
  recent real data (the paper's eps_pi), as KL(pi_now || pi_then) on the states where the policy
  acted, pi_then being the policy's Gaussian (``TanhGaussianPolicy.act_and_gaussian``) recorded
  at the step it acted.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from mbpo_ray.data.rows import RowLayout
from mbpo_ray.models.targets import fit_data_from_rows

# Policy steps kept for the KL: at most one paper epoch (1000 env steps).
BEHAVIOR_CAPACITY = 1000


@torch.no_grad()
def elite_mse(model, rows: torch.Tensor, layout: RowLayout) -> float:
    """Mean over the elites of each member's mean squared error of its mean prediction of
    [reward, obs change] on transition rows [N, width]: the definition of model/holdout_mse
    (docs/metrics.md), on other data."""
    inputs, targets = fit_data_from_rows(rows, layout)
    mean, _ = model(inputs)  # [E, N, 1 + obs_dim]
    mse = ((mean - targets) ** 2).mean(dim=(1, 2))
    return float(mse[model.elite_idx].mean())


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last dim -> [B] (nats). For two
    tanh-squashed Gaussians it is the same number: KL is unchanged by the same invertible map
    (tanh) applied to both."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    shift = (mean_p - mean_q) ** 2 * torch.exp(-2 * log_std_q)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + shift) - 0.5).sum(dim=-1)


class BehaviorLog:
    """The most recent ``capacity`` policy steps of the training env: the state and the Gaussian
    of the policy that acted there, as rows [obs | mean | log std] on the policy's device.
    ``take_kl`` gives the mean KL(pi_now || pi_then) over them and empties the log (so each
    epoch record covers the policy steps since the previous record)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int = BEHAVIOR_CAPACITY, device="cpu"):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.rows = torch.zeros(capacity, obs_dim + 2 * act_dim, device=device)
        self.ptr = self.size = 0

    @property
    def width(self) -> int:
        return self.rows.shape[1]

    def add(self, obs: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.add_rows(torch.cat([obs, mean, log_std], dim=-1))

    @torch.no_grad()
    def add_rows(self, rows: torch.Tensor) -> None:
        """rows [B, obs_dim + 2 act_dim]; only the newest ``capacity`` are kept."""
        cap = self.rows.shape[0]
        for row in rows[-cap:].to(self.rows.device):  # a few rows per call (one per env step)
            self.rows[self.ptr] = row
            self.ptr = (self.ptr + 1) % cap
            self.size = min(self.size + 1, cap)

    def __len__(self) -> int:
        return self.size

    @torch.no_grad()
    def take_kl(self, policy) -> Optional[float]:
        """Mean KL(pi_now || pi_then) in nats over the logged steps, or None when there are none;
        empties the log."""
        if self.size == 0:
            return None
        rows = self.rows[: self.size]
        o, a = self.obs_dim, self.act_dim
        obs, mean_then, log_std_then = rows[:, :o], rows[:, o:o + a], rows[:, o + a:]
        mean_now, log_std_now = policy.gaussian(obs.to(next(policy.parameters()).device))
        kl = gaussian_kl(mean_now, log_std_now, mean_then.to(mean_now.device), log_std_then.to(mean_now.device))
        self.ptr = self.size = 0
        return float(kl.mean())

    def state_dict(self) -> Dict[str, Any]:
        # The storage as it is (not re-ordered), so that a restored log sums its KL in the same
        # order: a resumed run's record is bit-identical (docs/resume.md).
        return {"rows": self.rows[: self.size].cpu().clone(), "ptr": self.ptr}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        rows = state["rows"]
        self.rows.zero_()
        self.rows[: rows.shape[0]] = rows.to(self.rows.device)
        self.size, self.ptr = rows.shape[0], state["ptr"]
