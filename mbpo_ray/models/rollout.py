"""Branched model rollouts (MBPO paper, Algorithm 2): k steps of the current policy in the
learned model (``ModelEnv``), from start states drawn from real data. Everything stays on the
device, from the model's sample to D_model."""
from __future__ import annotations

from typing import Dict, Protocol

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


@torch.no_grad()
def branched_rollout(model: ProbabilisticEnsemble, policy: Policy, start_obs: torch.Tensor, k: int,
                     termination: TerminationFn, buffer: ReplayBuffer) -> Dict[str, float]:
    """Roll every start state k steps (fewer if it terminates); each step each sample uses a
    random elite and samples reward and next state from its Gaussian. Rows with a non-finite
    prediction are dropped (not stored, not continued) and counted in rollout/nonfinite.
    Returns rollout/ metrics, with the live diagnostics of docs/diagnostics.md (how the rollouts
    ended; the elites' disagreement at the first ``DISAGREEMENT_ROWS`` start states with the
    actions of the first step: no random draw of their own)."""
    env = ModelEnv(model, termination)
    layout = buffer.layout
    obs = start_obs
    added = torch.zeros((), dtype=torch.long, device=obs.device)
    terminated = torch.zeros_like(added)
    nonfinite = torch.zeros_like(added)
    reward_sum = torch.zeros((), device=obs.device)
    steps = 0
    disagreement = None
    for _ in range(k):
        # Random draws in this order every step: the policy's, the elites', the model's.
        act = policy.act(obs)
        member = model.random_elites(obs.shape[0], device=obs.device)
        if disagreement is None:
            disagreement = model.disagreement(obs[:DISAGREEMENT_ROWS], act[:DISAGREEMENT_ROWS])
        step = env.step(obs, act, member, noise="all")
        finite = step.finite
        nonfinite += (~finite).sum()
        obs, act = obs[finite], act[finite]
        next_obs, rew, done = step.next_obs[finite], step.reward[finite], step.terminated[finite]
        buffer.add_rows(layout.pack(obs, act, rew, next_obs, done))
        added += obs.shape[0]
        terminated += done.sum()
        reward_sum += rew.sum()
        steps += 1
        obs = next_obs[~done]
        if obs.shape[0] == 0:
            break
    n_added = int(added)
    n_start = int(start_obs.shape[0])
    diagnostics = {} if disagreement is None else {"rollout/start_disagreement": float(disagreement)}
    return {
        "rollout/k": k,
        "rollout/steps_taken": steps,
        "rollout/start_states": int(start_obs.shape[0]),
        "rollout/transitions": n_added,
        "rollout/terminated_frac": int(terminated) / max(1, n_added),
        "rollout/nonfinite": int(nonfinite),
        "rollout/mean_reward": float(reward_sum) / max(1, n_added),
        "rollout/model_buffer_size": len(buffer),
        # each rollout ends at most once: on its terminal transition or its dropped prediction
        "rollout/ended_terminated": int(terminated) / max(1, n_start),
        "rollout/ended_nonfinite": int(nonfinite) / max(1, n_start),
        **diagnostics,
    }
