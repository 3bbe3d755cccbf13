"""Cross-entropy method over action sequences (the optimiser of PETS, Chua et al. 2018).

``CEMOptimizer`` minimises a batched cost ``cost(plans [population, horizon, act_dim]) ->
[population]`` over plans inside the box [lower, upper]:

* the search starts from ``mean`` (the middle of the box, or the warm-start plan) with
  variance (upper - lower)^2 / 16 in every coordinate;
* each iteration samples the whole population at once from a normal truncated at 2 sigma,
  after capping the variance at min(((mean - lower) / 2)^2, ((upper - mean) / 2)^2), so that
  2 sigma never leaves the box and no sample needs clipping (the cap applies to sampling
  only: the smoothed variance and the stop rule below use the uncapped one, as PETS's code);
* the ``num_elites`` lowest-cost plans give the new mean and (population) variance, smoothed:
  new = smoothing * old + (1 - smoothing) * elite statistic;
* it stops after ``iterations`` or once the largest variance is below ``min_variance``.

``act`` returns the first action of the final mean and keeps the rest of the plan, shifted one
step with the box middle appended, as the next call's starting mean (the warm start of PETS's
MPC); the variance is never warm-started. ``reset`` forgets the plan (call it at episode start).

Truncated normal: ``torch.nn.init.trunc_normal_`` (inverse-CDF sampling: a uniform draw on
[Phi(-2), Phi(2)] mapped through erfinv, then clamped to [-2, 2] against rounding) fills a
fresh [population, horizon, act_dim] tensor of standard draws, which is then scaled by
the capped standard deviation and shifted by the mean: one tensor op per iteration, no
rejection loop. It draws from ``generator`` when one is given, else from the global torch RNG,
so a run is deterministic under its seed either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

CostFn = Callable[[torch.Tensor], torch.Tensor]

TRUNCATION = 2.0  # samples lie within 2 (capped) standard deviations of the mean


@dataclass
class CEMResult:
    mean: torch.Tensor        # [horizon, act_dim], the optimised plan
    variance: torch.Tensor    # [horizon, act_dim], the final (smoothed) variance
    elite_cost: torch.Tensor  # scalar tensor: mean cost of the last iteration's elites
    iterations: int           # iterations run (fewer than the budget after an early stop)


def capped_variance(mean: torch.Tensor, var: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """The variance used for sampling: at most ((distance to the nearer bound) / 2)^2, so that
    mean +- 2 sigma stays inside [lower, upper]."""
    to_lower, to_upper = mean - lower, upper - mean
    return torch.minimum(torch.minimum((to_lower / 2) ** 2, (to_upper / 2) ** 2), var)


def sample_truncated(mean: torch.Tensor, var: torch.Tensor, out: torch.Tensor,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``out`` [n, *mean.shape] with draws of N(mean, var) truncated at 2 sigma."""
    torch.nn.init.trunc_normal_(out, mean=0.0, std=1.0, a=-TRUNCATION, b=TRUNCATION, generator=generator)
    return out.mul_(var.sqrt()).add_(mean)


class CEMOptimizer:
    def __init__(self, horizon: int, act_dim: int, population: int, num_elites: int,
                 iterations: int, smoothing: float = 0.1, min_variance: float = 1e-3,
                 lower: float = -1.0, upper: float = 1.0, device: torch.device | str = "cpu",
                 generator: Optional[torch.Generator] = None):
        if not 1 <= num_elites <= population:
            raise ValueError(f"num_elites={num_elites} must be between 1 and population={population}")
        if not lower < upper:
            raise ValueError(f"lower={lower} must be below upper={upper}")
        self.horizon, self.act_dim = horizon, act_dim
        self.population, self.num_elites, self.iterations = population, num_elites, iterations
        self.smoothing, self.min_variance = smoothing, min_variance
        self.lower, self.upper = float(lower), float(upper)
        self.device = torch.device(device)
        self.generator = generator
        self.middle = (self.lower + self.upper) / 2
        self.initial_variance = (self.upper - self.lower) ** 2 / 16
        self.plan = torch.full((horizon, act_dim), self.middle, device=self.device)

    def reset(self) -> None:
        """Forget the warm-start plan (a new episode starts from the middle of the box)."""
        self.plan.fill_(self.middle)

    @torch.no_grad()
    def optimize(self, cost_fn: CostFn, mean: Optional[torch.Tensor] = None) -> CEMResult:
        """Run CEM from ``mean`` (default: the warm-start plan). ``cost_fn`` gets the whole
        population in one call per iteration."""
        mean = (self.plan if mean is None else mean).to(self.device, torch.float32).clone()
        var = torch.full_like(mean, self.initial_variance)
        a = self.smoothing
        elite_cost = torch.zeros((), device=self.device)
        done = 0
        while done < self.iterations and float(var.max()) > self.min_variance:
            samples = sample_truncated(mean, capped_variance(mean, var, self.lower, self.upper),
                                       torch.empty(self.population, *mean.shape, device=self.device),
                                       self.generator)
            costs = cost_fn(samples)
            if costs.shape != (self.population,):
                raise ValueError(f"cost_fn returned shape {tuple(costs.shape)}, "
                                 f"expected ({self.population},)")
            # torch orders NaN above every number, so a NaN cost never makes a plan an elite
            # (PETS's cost replaces it by nan_cost before it gets here anyway).
            elite_costs, elite_idx = torch.topk(costs, self.num_elites, largest=False, sorted=False)
            elites = samples[elite_idx]
            mean = a * mean + (1 - a) * elites.mean(dim=0)
            var = a * var + (1 - a) * elites.var(dim=0, unbiased=False)
            elite_cost = elite_costs.mean()
            done += 1
        return CEMResult(mean, var, elite_cost, done)

    def act(self, cost_fn: CostFn) -> tuple[torch.Tensor, CEMResult]:
        """Optimise from the warm-start plan; return (first action [act_dim], result) and keep
        the plan shifted by one step for the next call."""
        result = self.optimize(cost_fn)
        self.plan = torch.cat([result.mean[1:], torch.full_like(result.mean[:1], self.middle)])
        return result.mean[0].clone(), result

    def state_dict(self) -> Dict[str, torch.Tensor]:
        state = {"plan": self.plan.cpu().clone()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.plan = state["plan"].to(self.device).clone()
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
