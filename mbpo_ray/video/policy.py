"""The deterministic policy of a run at one of its checkpoints (docs/video.md, "Policy video").

mbpo, sac and steve: the SAC policy network of checkpoint.pt (local or Ray runtime) or of a kept
copy (``--checkpoint``), its mean action; no runtime is started. pets: the algorithm rebuilt from
checkpoint.pt, acting by its CEM planner (``PETS.act``). rllib-sac: the algorithm rebuilt from its
RLlib checkpoint (a local Ray), its mean action (``RLlibSAC.act``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from mbpo_ray.video.render import VideoError

POLICY_NETWORK_ALGOS = ("mbpo", "sac", "steve")
REBUILT_ALGOS = ("pets", "rllib-sac")


@dataclass
class Policy:
    """``act(obs) -> action in [-1, 1]``; ``reset()`` at each episode's start (a planner's warm
    start); ``env_steps`` of the checkpoint it comes from; ``close()``; ``source``: the rebuilt
    algorithm of a pets or rllib-sac run (its ensemble for a dream), else None."""

    act: Callable[[np.ndarray], np.ndarray]
    env_steps: int
    reset: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    source: Any = None


def kept_copy(run, env_steps: int) -> Path:
    """checkpoints/step_<env_steps>.pt of ``run``, or a VideoError listing those kept."""
    paths = run.snapshots()
    for path in paths:
        if run.snapshot_env_steps(path) == env_steps:
            return path
    kept = ", ".join(str(run.snapshot_env_steps(p)) for p in paths) or "none"
    raise VideoError(f"--checkpoint {env_steps}: {run.path} keeps no networks at {env_steps} env steps "
                     f"(kept: {kept}; train with --set keep_checkpoints_every=N to keep them)")


def load_policy(run, checkpoint: Optional[int] = None) -> Policy:
    """The policy of ``run`` (``mbpo_ray.diagnostics.load.Run``) at checkpoint.pt, or at the kept
    copy of ``checkpoint`` env steps."""
    algo = run.cfg.algo
    if algo == "steve":  # its own model (not an ensemble): the policy alone, from checkpoint.pt
        if checkpoint is not None:
            raise VideoError("--checkpoint: a steve run's video is of its checkpoint.pt; leave --checkpoint out")
        policy, env_steps = _steve_policy(run)
    elif algo in POLICY_NETWORK_ALGOS:
        nets = run.load_snapshot(kept_copy(run, checkpoint)) if checkpoint is not None else run.networks()
        policy, env_steps = nets.policy, nets.env_steps
    if algo in POLICY_NETWORK_ALGOS:
        device = run.device

        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
                return policy.act(obs_t, deterministic=True)[0].cpu().numpy()
        return Policy(act, env_steps)
    if algo in REBUILT_ALGOS:
        if checkpoint is not None:
            raise VideoError(f"--checkpoint: a {algo} run keeps only its latest checkpoint; leave --checkpoint out")
        return _rebuilt(run)
    raise VideoError(f"{run.path}: videos of {algo} runs are not supported (one of "
                     f"{', '.join(POLICY_NETWORK_ALGOS + REBUILT_ALGOS)})")


def _rebuilt(run) -> Policy:
    from mbpo_ray.algos import make_algorithm

    checkpoint = run.dir.load_checkpoint()
    algorithm = make_algorithm(run.cfg, torch.device("cpu"), run.path)
    try:
        algorithm.load_state_dict(checkpoint["algorithm"])
    except Exception:
        algorithm.close()
        raise
    return Policy(algorithm.act, int(checkpoint["env_steps"]), reset=getattr(algorithm, "reset_acting", lambda: None),
                  close=algorithm.close, source=algorithm)


def _steve_policy(run):
    from mbpo_ray.agents.sac import TanhGaussianPolicy

    checkpoint = run.dir.load_checkpoint()
    try:
        module = checkpoint["algorithm"]["runtime"]["agent"]["module"]
        weights = {k[len("policy."):]: v for k, v in module.items() if k.startswith("policy.")}
        obs_dim = weights["net.0.weight"].shape[1]
        act_dim = weights[f"net.{2 * run.cfg.sac.num_hidden_layers}.weight"].shape[0] // 2
        policy = TanhGaussianPolicy.from_config(obs_dim, act_dim, run.cfg.sac)
        policy.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise VideoError(f"{run.dir.checkpoint_path} does not hold a steve run's policy ({type(exc).__name__}: "
                         f"{exc})") from None
    return policy.to(run.device).eval(), int(checkpoint["env_steps"])
