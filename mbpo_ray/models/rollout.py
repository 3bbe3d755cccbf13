"""Branched model rollouts (MBPO paper, Algorithm 2): k steps of the current policy in the
learned model (``ModelEnv``), from start states drawn from real data. Everything stays on the
device, from the model's sample to D_model."""
from __future__ import annotations

from typing import Any, Dict, Optional, Protocol

import torch

from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.model_env import ModelEnv, TerminationFn

# Start states of a rollout batch at which the elites' disagreement is measured
# (rollout/start_disagreement, docs/diagnostics.md#live-metrics): the first ones of the batch (it
# was sampled at random already, so no new draw is needed); 256 rows cost a few per cent of one
# rollout step at the paper's batch of 400 start states per env step.
DISAGREEMENT_ROWS = 256


class Policy(Protocol):
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim] -> actions [B, act_dim] in [-1, 1], sampled (with exploration)."""


def rollout_length(epoch: int, schedule) -> int:
    """k = clip(min_k + (epoch - a) / (b - a) * (max_k - min_k), min_k, max_k), rounded down
    (the paper's linear schedule; ``schedule`` = (a, b, min_k, max_k), presets in
    docs/hyperparameters.md)."""
    start_epoch, end_epoch, min_k, max_k = schedule
    k = min_k + (epoch - start_epoch) / (end_epoch - start_epoch) * (max_k - min_k)
    return int(min(max(k, min_k), max_k))


def rollout_length_at(env_steps: int, mbpo_cfg) -> int:
    """k after ``env_steps`` env steps of a run with this ``mbpo`` config. The released code counts
    the k schedule's epochs from the end of the random warm-up (its initial exploration runs
    before epoch 0), so Hopper's ramp starts at 5k + 20k steps."""
    training_epoch = max(0, env_steps - mbpo_cfg.init_random_steps) // mbpo_cfg.epoch_length
    return rollout_length(training_epoch, mbpo_cfg.rollout_schedule)


def gaussian_jensen_shannon(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The ensemble's uncertainty at each row: the mean over all pairs of members of the geometric
    Jensen-Shannon divergence (skew 1/2) between their diagonal Gaussians, mean and logvar
    [E, B, D] -> [B] (nats; docs/mbpo_plus.md#uncertainty-aware-rollouts). For one pair,
    with s = var_1 + var_2:
    sum_d 1/4 (mu_1 - mu_2)^2 / s + 1/2 log(s / 2) - 1/4 (log var_1 + log var_2)."""
    members = mean.shape[0]
    if members < 2:
        return torch.zeros(mean.shape[1], device=mean.device)
    var = logvar.exp()
    total = torch.zeros(mean.shape[1], device=mean.device, dtype=mean.dtype)
    for i in range(members):
        for j in range(i + 1, members):
            s = var[i] + var[j]
            total += (0.25 * (mean[i] - mean[j]) ** 2 / s + 0.5 * torch.log(0.5 * s)
                      - 0.25 * (logvar[i] + logvar[j])).sum(-1)
    return total / (members * (members - 1) // 2)


class RolloutUncertainty:
    """mbpo.rollout_uncertainty: which transitions of a rollout batch are kept, by the elites'
    uncertainty at each (state, action) (``gaussian_jensen_shannon``). A kept transition goes to
    D_model and its rollout goes on; a dropped one ends its rollout.

    * m2ac (Pan et al., NeurIPS 2020): step h (from 0) of a k-step batch keeps the
      floor(rate_h x start states) rows of lowest uncertainty among those still going, rate_h =
      (k - h) / (2 (k + 1)), or ``m2ac_keep_rate`` when k = 1.
    * macura (Frauenknecht et al., ICML 2024): a row goes on while its uncertainty is below a
      threshold: ``macura_scale`` times the ``macura_quantile`` percentile of the first step's
      uncertainty (the real start states with the policy's actions), averaged over the run's
      rollout batches so far (the average is this object's state, kept in checkpoints).

    Both subtract ``uncertainty_penalty`` x uncertainty from each kept reward."""

    def __init__(self, mbpo_cfg):
        self.rule = mbpo_cfg.rollout_uncertainty
        self.keep_rate, self.penalty = mbpo_cfg.m2ac_keep_rate, mbpo_cfg.uncertainty_penalty
        self.quantile, self.scale = mbpo_cfg.macura_quantile, mbpo_cfg.macura_scale
        self.batches, self.threshold = 0, None  # macura's running threshold (None: no batch yet)

    def keep(self, uncertainty: torch.Tensor, step: int, k: int, num_start: int) -> torch.Tensor:
        """[B] bool: the rows of step ``step`` (from 0) of a ``k``-step batch of ``num_start``
        rollouts that are kept, from their uncertainty [B]."""
        if self.rule == "m2ac":
            rate = self.keep_rate if k == 1 else (k - step) / (2 * (k + 1))
            count = min(int(num_start * rate), uncertainty.shape[0])
            kept = torch.zeros_like(uncertainty, dtype=torch.bool)
            kept[torch.argsort(uncertainty)[:count]] = True
            return kept
        finite = uncertainty[torch.isfinite(uncertainty)]
        if step == 0 and finite.numel():
            border = self.scale * float(torch.quantile(finite.float(), self.quantile / 100))
            self.threshold = border if self.batches == 0 else (
                (border + self.batches * self.threshold) / (self.batches + 1))
            self.batches += 1
        if self.threshold is None:  # no finite uncertainty seen yet: nothing to trust
            return torch.zeros_like(uncertainty, dtype=torch.bool)
        return uncertainty < self.threshold

    def metrics(self) -> Dict[str, float]:
        return {"rollout/uncertainty_threshold": self.threshold} if self.threshold is not None else {}

    def state_dict(self) -> Dict[str, Any]:
        return {"batches": self.batches, "threshold": self.threshold}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.batches, self.threshold = state["batches"], state["threshold"]


def make_rollout_uncertainty(mbpo_cfg) -> Optional[RolloutUncertainty]:
    """The rule of mbpo.rollout_uncertainty, None for none (the paper's rollouts)."""
    return None if mbpo_cfg.rollout_uncertainty == "none" else RolloutUncertainty(mbpo_cfg)


@torch.no_grad()
def branched_rollout(model: ProbabilisticEnsemble, policy: Policy, start_obs: torch.Tensor, k: int,
                     termination: TerminationFn, buffer: ReplayBuffer,
                     uncertainty: Optional[RolloutUncertainty] = None) -> Dict[str, float]:
    """Roll every start state k steps (fewer if it terminates); each step each sample uses a
    random elite and samples reward and next state from its Gaussian. Rows with a non-finite
    prediction are dropped (not stored, not continued) and counted in rollout/nonfinite.
    Returns rollout/ metrics, with the live diagnostics of docs/diagnostics.md (how the rollouts
    ended; the elites' disagreement at the first ``DISAGREEMENT_ROWS`` start states with the
    actions of the first step: no random draw of their own). ``uncertainty``: the rule that keeps
    or drops each transition by the elites' uncertainty (mbpo.rollout_uncertainty), None: all kept."""
    env = ModelEnv(model, termination)
    layout = buffer.layout
    obs = start_obs
    added = torch.zeros((), dtype=torch.long, device=obs.device)
    terminated = torch.zeros_like(added)
    nonfinite = torch.zeros_like(added)
    dropped = torch.zeros_like(added)  # rollouts ended by the uncertainty rule
    uncertainty_sum = torch.zeros((), device=obs.device)
    reward_sum = torch.zeros((), device=obs.device)
    steps, n_start = 0, int(start_obs.shape[0])
    disagreement = None
    for _ in range(k):
        # Random draws in this order every step: the policy's, the elites', the model's.
        act = policy.act(obs)
        member = model.random_elites(obs.shape[0], device=obs.device)
        if disagreement is None:
            disagreement = model.disagreement(obs[:DISAGREEMENT_ROWS], act[:DISAGREEMENT_ROWS])
        if uncertainty is None:
            step = env.step(obs, act, member, noise="all")
            stored = step.finite
        else:
            step, mean, logvar = env.step_all_members(obs, act, member)
            u = gaussian_jensen_shannon(mean[model.elite_idx], logvar[model.elite_idx])
            kept = uncertainty.keep(torch.where(torch.isfinite(u), u, torch.inf), steps, k, n_start)
            stored = step.finite & kept
            dropped += (step.finite & ~kept).sum()
            uncertainty_sum += u[stored].sum()
            if uncertainty.penalty:
                step = step._replace(reward=step.reward - uncertainty.penalty * u)
        nonfinite += (~step.finite).sum()
        obs, act = obs[stored], act[stored]
        next_obs, rew, done = step.next_obs[stored], step.reward[stored], step.terminated[stored]
        buffer.add_rows(layout.pack(obs, act, rew, next_obs, done))
        added += obs.shape[0]
        terminated += done.sum()
        reward_sum += rew.sum()
        steps += 1
        obs = next_obs[~done]
        if obs.shape[0] == 0:
            break
    n_added = int(added)
    diagnostics = {} if disagreement is None else {"rollout/start_disagreement": float(disagreement)}
    if uncertainty is not None:
        diagnostics["rollout/ended_by_uncertainty"] = int(dropped) / max(1, n_start)
        diagnostics["rollout/mean_uncertainty"] = float(uncertainty_sum) / max(1, n_added)
        diagnostics.update(uncertainty.metrics())
    return {
        "rollout/k": k,
        "rollout/steps_taken": steps,
        "rollout/start_states": int(start_obs.shape[0]),
        "rollout/transitions": n_added,
        "rollout/terminated_frac": int(terminated) / max(1, n_added),
        "rollout/nonfinite": int(nonfinite),
        "rollout/mean_reward": float(reward_sum) / max(1, n_added),
        "rollout/model_buffer_size": len(buffer),
        "rollout/mean_length": n_added / max(1, n_start),
        # each rollout ends at most once: on its terminal transition or its dropped prediction
        "rollout/ended_terminated": int(terminated) / max(1, n_start),
        "rollout/ended_nonfinite": int(nonfinite) / max(1, n_start),
        **diagnostics,
    }
