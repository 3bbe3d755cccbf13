"""PETS's trajectory sampling (Chua et al. 2018): the cost of candidate plans under the learned
ensemble, as CEM (``mbpo_ray.planning.cem``) asks for it.

Model. Each step is one ``ModelEnv`` step (``mbpo_ray.models.model_env``): the ensemble's
prediction for each row's member, then the env's termination rule on the predicted next state.
The planner's reward is the ensemble's reward head: no per-env reward function. A terminated
particle collects the reward of its terminating transition and nothing after it (its state is
frozen so it cannot turn non-finite later). A particle that is still alive in a non-finite state
(or gets a non-finite reward) makes its plan's cost non-finite, hence ``nan_cost``; where the
termination rule itself declares non-finite states terminal (docs/termination.md), such a
particle just ends.

Cost of a plan. Each of ``num_particles`` particles starts at the current real state and
follows the plan for ``horizon`` steps; cost = mean over particles of minus the summed
predicted reward (discount 1); a non-finite cost becomes ``nan_cost``. The whole population x
particles is one batch of rows (row = plan * particles + particle), one model call per horizon
step; ``forward_members`` computes for each row only its member.

Propagation (which member a particle uses, always among the model's elites):
  * ts-inf: each particle draws one member uniformly at random and keeps it for the whole
    plan. The draw is made per plan evaluation, i.e. afresh in every cost-function call (every
    CEM iteration) and independently for every plan of the population, as PETS does; within
    one evaluation a particle's member never changes along its trajectory. Next states are
    sampled from the member's Gaussian.
  * ts-1: every particle re-draws its member at every step; next states sampled likewise.
  In both TS variants the reward enters as the member's mean, not a sample: the Gaussian is
  diagonal, so the reward's noise is independent of the sampled next state and never feeds
  back into the trajectory; averaging it out leaves every plan's expected cost unchanged and
  only removes noise from the ranking of plans (with a +1 alive bonus, that noise would
  otherwise decide between plans that all survive).
  * expectation: no sampling at all. Particle j uses elite member j and propagates that
    member's mean prediction; only min(num_particles, num_elites) particles are computed,
    because further ones would repeat a member's deterministic trajectory (and weight it
    unevenly when num_particles is not a multiple of num_elites). The cost is then the
    average over the elites of their mean-prediction returns, deterministic given the plan.

Random draws: the member schedule from ``generator`` (the global torch RNG when None), the
next-state noise from the global torch RNG.
"""
from __future__ import annotations

from typing import Optional

import torch

from mbpo_ray.models.model_env import ModelEnv, TerminationFn

PROPAGATIONS = ("ts-inf", "ts-1", "expectation")


class TrajectorySampler:
    """Batched cost of plans under the ensemble: ``cost(obs, plans [P, H, A]) -> [P]``."""

    def __init__(self, model, termination: TerminationFn, propagation: str,
                 num_particles: int, nan_cost: float, generator: Optional[torch.Generator] = None):
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation={propagation!r}: expected ts-inf, ts-1 or expectation")
        self.model, self.termination = model, termination
        self.model_env = ModelEnv(model, termination)
        self.propagation, self.num_particles, self.nan_cost = propagation, num_particles, nan_cost
        self.noise = "none" if propagation == "expectation" else "obs"
        self.generator = generator

    @property
    def particles_per_plan(self) -> int:
        if self.propagation == "expectation":
            return min(self.num_particles, self.model.num_elites)
        return self.num_particles

    def member_schedule(self, num_plans: int, horizon: int) -> torch.Tensor:
        """Member index of every row at every step: [horizon, num_plans * particles_per_plan]."""
        elites = self.model.elite_idx
        n = self.particles_per_plan
        rows = num_plans * n
        if self.propagation == "expectation":
            members = elites[torch.arange(rows, device=elites.device) % n]
            return members.expand(horizon, rows)
        num_elites = elites.shape[0]
        if self.propagation == "ts-inf":
            draw = torch.randint(num_elites, (rows,), device=elites.device, generator=self.generator)
            return elites[draw].expand(horizon, rows)
        draw = torch.randint(num_elites, (horizon, rows), device=elites.device, generator=self.generator)
        return elites[draw]

    @torch.no_grad()
    def cost(self, obs: torch.Tensor, plans: torch.Tensor) -> torch.Tensor:
        """obs [obs_dim] (the real current state), plans [P, H, A] in [-1, 1] -> cost [P]."""
        num_plans, horizon, act_dim = plans.shape
        n = self.particles_per_plan
        rows = num_plans * n
        members = self.member_schedule(num_plans, horizon)
        actions = plans.unsqueeze(1).expand(num_plans, n, horizon, act_dim).reshape(rows, horizon, act_dim)
        state = obs.reshape(1, -1).expand(rows, -1)
        total = torch.zeros(rows, device=plans.device)
        alive = torch.ones(rows, dtype=torch.bool, device=plans.device)
        for t in range(horizon):
            step = self.model_env.step(state, actions[:, t], members[t], noise=self.noise)
            # where, not multiply: a dead particle's NaN must not reach the sum
            total = total + torch.where(alive, step.reward, torch.zeros_like(step.reward))
            alive = alive & ~step.terminated
            # A live particle with a non-finite prediction makes its plan's cost non-finite
            # (nan_cost) even when its reward happens to be finite.
            broken = alive & ~step.finite
            total = torch.where(broken, torch.full_like(total, float("nan")), total)
            state = torch.where(alive[:, None], step.next_obs, state)
        cost = -total.view(num_plans, n).mean(dim=1)
        return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, self.nan_cost))
