from __future__ import annotations

from typing import Any, Dict, Optional, Protocol


class Runtime(Protocol):
    """The operations an algorithm loop asks for. Each returns plain-Python metrics."""

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
        """num_updates SAC gradient steps on batches mixing real_ratio real data."""

    def agent_metrics(self) -> Dict[str, float]:
        """Mean SAC metrics since the last call."""

    def runtime_metrics(self) -> Dict[str, float]:
        """perf/ metrics of the runtime itself (per-actor throughput, weight lags) since the
        last call."""

    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        """Deterministic-policy returns on fresh episodes of the real env."""

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...
