"""The interfaces between algorithms and runtimes.

An algorithm's loop (``mbpo_ray.algos``) asks a runtime for work (an env step, a model fit,
rollouts, agent updates, an evaluation) through these interfaces only; it builds its runtime
with ``mbpo_ray.runtime.factory.make_runtime``. A runtime never knows which algorithm drives it.
See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

# (obs_dim, act_dim, cfg, device) -> the learner a runtime trains (SAC unless an algorithm passes
# its own, e.g. STEVE's). It offers ``policy``, ``update(*batch)``, ``observe(obs, rew, next_obs)``,
# ``metric_names``, ``full_state_dict()`` and ``load_full_state_dict()``.
AgentBuilder = Callable[[int, int, Any, Any], Any]


class Runtime(Protocol):
    """The step-by-step operations of an MBPO-style loop. Each returns plain-Python metrics."""

    def env_step(self, random_action: bool) -> Optional[float]:
        """Step the training env once with the current policy (or a uniform random action);
        store the transition in D_env; return the episode return if an episode ended."""

    def real_size(self) -> int:
        """Transitions in D_env."""

    def fit_model(self) -> Dict[str, float]:
        """Refit the dynamics ensemble on D_env."""

    def generate_rollouts(self, num_start_states: int, rollout_length: int,
                          model_buffer_capacity: int) -> Dict[str, float]:
        """Branch rollouts from real start states into D_model (resized first if needed)."""

    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        """num_updates agent gradient steps on batches mixing real_ratio real data."""

    def reset_agent(self) -> None:
        """Re-initialise the agent's networks and their optimiser state (mbpo.agent_reset_every;
        docs/mbpo_plus.md#resets)."""

    def reset_model(self) -> None:
        """Re-initialise the dynamics ensemble and its optimiser state (mbpo.model_reset_every)."""

    def agent_metrics(self) -> Dict[str, float]:
        """Mean agent metrics since the last call."""

    def runtime_metrics(self) -> Dict[str, float]:
        """perf/ metrics of the runtime itself (per-actor throughput, weight lags) since the
        last call."""

    def diagnostic_metrics(self) -> Dict[str, float]:
        """The live diagnostics not tied to one fit or rollout batch (rollout/policy_kl: the
        policy's KL from the policy that acted at each real step since the last call;
        docs/diagnostics.md#live-metrics); empty without a model. Draws no random numbers."""

    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        """Deterministic-policy returns on fresh episodes of the real env."""

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release what the runtime holds outside this process (actors, a Ray instance)."""


class StackableRuntime(Runtime, Protocol):
    """A runtime whose seed can join a seed group (mbpo_ray.seed_group, docs/seed_groups.md): the
    group runs the agent updates of all its seeds as one stacked update and their model fits as
    one stacked fit, with each seed's own data and random draws. What the group needs of each
    seed's runtime for that, besides the step-by-step operations:"""

    device: Any       # the torch device the seed's networks live on
    precision: str    # float32 or bf16 (mbpo_ray.precision)
    agent: Any        # the learner (``AgentBuilder``), whose parameters the stacked update stacks
    model_trainer: Any  # the ensemble's EnsembleTrainer, whose fit the stacked fit stacks

    def sample_batch(self, batch_size: int, real_ratio: float) -> Tuple[Any, ...]:
        """One agent-update batch (obs, act, rew, next_obs, done) mixing real_ratio real data,
        drawn with the current torch random stream."""

    def add_agent_metrics(self, metrics: Any) -> None:
        """One update's metrics tensor (the agent's ``metric_names`` order) into the epoch's means."""

    def fit_data(self) -> Tuple[Any, Any]:
        """D_env as the ensemble fits it: (inputs [N, in], targets [N, out])."""

    def new_data_mse(self) -> Optional[float]:
        """Before a fit: the current model's error on the real transitions since the last fit."""

    def model_fit_done(self, metrics: Dict[str, float], new_data: Optional[float]) -> Dict[str, float]:
        """After the ensemble's fit (the group's stacked one): the rest of a fit (a learned
        termination's fit, the bookkeeping); returns the fit's metrics."""


@dataclass(eq=False)
class Job:
    """One piece of work started on an ``AsyncRuntime`` and not yet waited for.

    ``kind`` is "collect", "fit", "rollout" or "update"; ``index`` the collector or rollout
    worker that runs it. ``handle`` belongs to the runtime (what it waits on, and what it needs
    to start the work again if the worker running it dies)."""

    kind: str
    index: int = 0
    handle: Any = field(default=None, repr=False)


class AsyncRuntime(Runtime, Protocol):
    """A runtime whose work can overlap: the loop starts jobs and waits for whichever ends
    first. A worker that dies while running a job is recreated and the job started again
    inside ``wait_any``; the loop only ever sees finished jobs."""

    @property
    def num_collectors(self) -> int: ...

    def start_collect(self, collector: int, num_steps: int, num_random: int) -> Job:
        """``num_steps`` env steps on one collector (the first ``num_random`` uniform random),
        with the newest policy; their transitions go to D_env. Result: ``steps``,
        ``finished_returns``."""

    def start_fit(self) -> Job:
        """Refit the ensemble on D_env; the fit's weights are used by rollouts started after
        it finished. Result: the fit's model/ metrics."""

    def start_rollouts(self, num_start_states: int, rollout_length: int,
                       model_buffer_capacity: int) -> List[Job]:
        """Branched rollouts with the newest model and policy, split over the rollout workers.
        Result of each: its rollout/ metrics; ``merge_rollout_metrics`` combines them."""

    def start_update(self, num_updates: int, real_ratio: float) -> Job:
        """Agent updates; the policy they produce is published when the job is waited for.
        Result: ``updates``."""

    def wait_any(self, jobs: Sequence[Job]) -> Tuple[Job, Dict[str, Any]]:
        """Block until one of ``jobs`` finished; return it with its result."""

    def merge_rollout_metrics(self, parts: List[Dict[str, Any]]) -> Dict[str, float]: ...
