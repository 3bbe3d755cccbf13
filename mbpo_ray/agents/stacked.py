"""Many seeds' SAC learners updated as one: every parameter stacked along a leading seed
dimension and one update for all of them (``mbpo_ray.agents.sac_update``, whose tensors carry that
seed dimension), so each layer is one batched matmul over seeds and critic members, with one Adam
step and one fused target lerp for all seeds (issue 13; docs/seed_groups.md).

The learners stay what they are: each seed keeps its own agent (policy for acting and rollouts,
state for its checkpoint); ``StackedUpdate`` owns the stacked copy that is trained, writes the new
weights back into the agents after each batch of updates (``write_back``) and their Adam state
before a checkpoint (``save_to_agents``); ``load_from_agents`` builds the stacked copy from the
agents (when it is built: after the agents loaded a checkpoint, on a resume).

A seed's update uses its own batch and its own noise (``SAC.draw_noise``), drawn from its own
random stream by the caller, so a seed trained in a stack sees the same numbers as alone.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mbpo_ray.agents.sac import SAC
from mbpo_ray.cuda_graph import GraphedStep
from mbpo_ray.nn import make_adam


class StackedUpdate:
    def __init__(self, agents: Sequence[nn.Module]):
        if not agents:
            raise ValueError("StackedUpdate needs at least one agent")
        template = agents[0]
        if not isinstance(template, SAC):
            raise ValueError(f"only SAC learners can be stacked, not {type(template).__name__}")
        if any(type(a) is not type(template) for a in agents):
            raise ValueError("StackedUpdate needs agents of one class")
        if len(template.optimizer.param_groups) != 1:
            raise ValueError("StackedUpdate needs agents with one optimizer parameter group")
        self.agents = list(agents)
        self.tau = template.sac_cfg.tau
        named = dict(template.named_parameters())
        # trained (in the agent optimizer's order), and the target critics (lerped, not trained)
        by_id = {id(p): n for n, p in named.items()}
        self.train_names = [by_id[id(p)] for p in template.optimizer.param_groups[0]["params"]]
        self.fixed_names = [n for n in named if n not in self.train_names]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.q_pairs = [(by_id[id(t)], by_id[id(q)]) for t, q in zip(template._q_target_params, template._q_params)]
        self.discount = template.cfg.discount
        self.options = template.gradient_options()
        self._gradients = template._gradients  # sac_gradients, or its torch.compile'd form
        group = template.optimizer.param_groups[0]
        self.load_from_agents()
        self.optimizer = make_adam(list(self.train.values()), group["lr"])
        self.optimizer.param_groups[0].update(betas=group["betas"], eps=group["eps"])
        self._load_optimizer_state()
        # sac.cuda_graph: the stacked update replayed from one graph (mbpo_ray.cuda_graph)
        self._graphed = (GraphedStep(self._step, self._stacked_tensors, [self.optimizer])
                         if template.sac_cfg.cuda_graph else None)

    # --- the stacked copy ---
    def _stack(self, names: List[str], buffers: bool = False) -> Dict[str, torch.Tensor]:
        tables = [dict(a.named_buffers() if buffers else a.named_parameters()) for a in self.agents]
        return {n: torch.stack([t[n].detach() for t in tables]).clone() for n in names}

    def load_from_agents(self) -> None:
        """Stack the agents' parameters and buffers (their Adam state: ``_load_optimizer_state``)."""
        self.train = self._stack(self.train_names)
        self.fixed = self._stack(self.fixed_names)
        self.buffers = self._stack(self.buffer_names, buffers=True)

    def _load_optimizer_state(self) -> None:
        states = []
        for agent in self.agents:
            named = dict(agent.named_parameters())
            states.append([agent.optimizer.state.get(named[n]) for n in self.train_names])
        self.optimizer.state.clear()
        if all(s is None for per_agent in states for s in per_agent):
            return  # nobody has stepped yet
        for j, n in enumerate(self.train_names):
            per_seed = [s[j] for s in states]
            if any(s is None for s in per_seed) or len({float(s["step"]) for s in per_seed}) != 1:
                raise ValueError("the seeds' optimizers are at different steps; a stacked update "
                                 "needs seeds that were trained in lockstep")
            self.optimizer.state[self.train[n]] = {
                "step": per_seed[0]["step"].clone(),
                "exp_avg": torch.stack([s["exp_avg"] for s in per_seed]).clone(),
                "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in per_seed]).clone(),
            }

    def _stacked_tensors(self) -> List[torch.Tensor]:
        return [*self.train.values(), *self.fixed.values(), *self.buffers.values()]

    def write_back(self) -> None:
        """The trained weights (and target critics) into each agent's own parameters."""
        names = self.train_names + self.fixed_names
        stacked = [*(self.train[n] for n in self.train_names), *(self.fixed[n] for n in self.fixed_names)]
        for i, agent in enumerate(self.agents):
            params = dict(agent.named_parameters())
            with torch.no_grad():
                torch._foreach_copy_([params[n] for n in names], [t[i] for t in stacked])

    def save_to_agents(self) -> None:
        """Weights and Adam state into each agent, so that its ``full_state_dict`` is what it
        would be had it been trained alone (a single run's checkpoint)."""
        self.write_back()
        for i, agent in enumerate(self.agents):
            named = dict(agent.named_parameters())
            for n in self.train_names:
                state = self.optimizer.state.get(self.train[n])
                if state:
                    agent.optimizer.state[named[n]] = {
                        "step": state["step"].clone(), "exp_avg": state["exp_avg"][i].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][i].clone()}

    # --- the update ---
    def update(self, batches: Sequence[Tuple[torch.Tensor, ...]], noises: Sequence[torch.Tensor],
               subsets: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """One update of every seed: seed i on ``batches[i]`` (obs, act, rew, next_obs, done) with
        ``noises[i]`` (and REDQ's ``subsets[i]``, ``SAC.draw_subset``). Returns the metrics
        [seeds, len(metric_names)]."""
        columns = [torch.stack(parts) for parts in zip(*batches)]
        draws = [torch.stack(list(noises))] + ([] if subsets is None else [torch.stack(list(subsets))])
        step = self._step if self._graphed is None else self._graphed
        return step(*columns, *draws)

    def _step(self, obs, act, rew, next_obs, done, noise, subset=None) -> torch.Tensor:
        """``update`` on the stacked batches and draws: a deterministic step that changes the
        stacked state in place (what a CUDA graph can replay)."""
        with torch.no_grad():
            grads, metrics = self._gradients(self.train, self.fixed, self.buffers["target_entropy"],
                                             obs, act, rew, next_obs, done, noise, self.discount, subset,
                                             **self.options)
        for n, t in self.train.items():
            t.grad = grads[n]
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_([self.fixed[t] for t, _ in self.q_pairs],
                                 [self.train[q] for _, q in self.q_pairs], self.tau)
        return metrics
