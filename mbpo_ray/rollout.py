"""Branched model rollouts (MBPO, Algorithm 2): k steps of the current policy in the learned
model, from start states drawn from real data. Everything stays on the device, from the
model's sample to D_model."""
from __future__ import annotations

from typing import Dict

import torch

from mbpo_ray.agents.sac import TanhGaussianPolicy
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.envs import TerminationFn
from mbpo_ray.models.ensemble import ProbabilisticEnsemble


def rollout_length(epoch: int, schedule) -> int:
    """k = clip(min_k + (epoch - a) / (b - a) * (max_k - min_k), min_k, max_k), rounded down."""
    start_epoch, end_epoch, min_k, max_k = schedule
    k = min_k + (epoch - start_epoch) / (end_epoch - start_epoch) * (max_k - min_k)
    return int(min(max(k, min_k), max_k))


@torch.no_grad()
def branched_rollout(model: ProbabilisticEnsemble, policy: TanhGaussianPolicy,
                     start_obs: torch.Tensor, k: int, termination: TerminationFn,
                     buffer: ReplayBuffer) -> Dict[str, float]:
    """Roll every start state k steps (fewer if it terminates); each step each sample uses a
    random elite and samples from its Gaussian. Non-finite predictions are dropped and counted
    (DESIGN.md section 4). Returns rollout/ metrics."""
    obs = start_obs
    added = torch.zeros((), dtype=torch.long, device=obs.device)
    terminated = torch.zeros_like(added)
    nonfinite = torch.zeros_like(added)
    reward_sum = torch.zeros((), device=obs.device)
    steps = 0
    for _ in range(k):
        act = policy.act(obs)
        member = model.random_elites(obs.shape[0], device=obs.device)
        next_obs, rew = model.sample(obs, act, member)
        finite = torch.isfinite(next_obs).all(dim=-1) & torch.isfinite(rew)
        nonfinite += (~finite).sum()
        obs, act, next_obs, rew = obs[finite], act[finite], next_obs[finite], rew[finite]
        done = termination(obs, act, next_obs)
        buffer.add_rows(torch.cat([obs, act, rew[:, None], next_obs, done[:, None].float()], dim=1))
        added += obs.shape[0]
        terminated += done.sum()
        reward_sum += rew.sum()
        steps += 1
        obs = next_obs[~done]
        if obs.shape[0] == 0:
            break
    n_added = int(added)
    return {
        "rollout/k": k,
        "rollout/steps_taken": steps,
        "rollout/start_states": int(start_obs.shape[0]),
        "rollout/transitions": n_added,
        "rollout/terminated_frac": int(terminated) / max(1, n_added),
        "rollout/nonfinite": int(nonfinite),
        "rollout/mean_reward": float(reward_sum) / max(1, n_added),
        "rollout/model_buffer_size": len(buffer),
    }
