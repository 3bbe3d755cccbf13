"""SAC's losses in autograd form: the reference that the written-out update
(mbpo_ray.agents.sac_update) is checked against (tests/test_sac_update.py). The same formulas
(docs/baselines.md), from the learner's own modules: the policy's ``forward``, the critics'
``StackedMLP.forward`` and ``ActorCritic._actor_losses``, which STEVE also trains with."""
from __future__ import annotations

import torch


def sac_losses(agent, obs, act, rew, next_obs, done, noise, subset=None):
    """(total loss, metrics in METRIC_NAMES's order) for one batch and its noise [2, B, A]; REDQ's
    ``subset`` [E] bool: the TD target's min over those target critics only (the policy loss's
    mean over all critics is the agent's ``policy_q_reduction``). The networks' LayerNorms are
    their modules' own (F.layer_norm)."""
    alpha = agent.log_alpha.exp().detach()
    with torch.no_grad():
        next_act, next_logp = agent.policy(next_obs, noise[0])
        next_q = agent.q_target(torch.cat([next_obs, next_act], -1)).squeeze(-1)
        if subset is not None:
            next_q = next_q[subset]
        next_q = next_q.min(0).values
        target = rew + agent.cfg.discount * (1.0 - done) * (next_q - alpha * next_logp)
    q = agent.q(torch.cat([obs, act], -1)).squeeze(-1)  # [E, B]
    q_loss = 0.5 * ((q - target) ** 2).mean(dim=1).sum()
    policy_loss, alpha_loss, logp = agent._actor_losses(obs, alpha, noise[1])
    total = q_loss + policy_loss + alpha_loss
    metrics = torch.stack([q_loss, policy_loss, alpha_loss, alpha, -logp.mean(), q.mean()]).detach()
    return total, metrics


def autograd_gradients(agent, batch, noise, subset=None):
    """The reference's gradients by parameter name, and its metrics; leaves the agent's .grad set."""
    total, metrics = sac_losses(agent, *batch, noise, subset)
    agent.optimizer.zero_grad(set_to_none=True)
    total.backward()
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}, metrics
