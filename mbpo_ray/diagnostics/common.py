"""What the analyses share: writing KIND.png and KIND.json, episodes of a run's policy in the
real env with the exact env state at every step, and small numeric helpers."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mbpo_ray.atomic import replacing, write_atomic
from mbpo_ray.envs import ActionScaler, get_env_state, make_env

# Reset seeds of the analyses' real episodes: apart from training's (the run seed) and
# evaluation's (1,000,000 + ..., docs/metrics.md#eval).
EPISODE_SEED_BASE = 50_000_000


def plt():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _plain(value: Any) -> Any:
    """JSON-ready: numpy and torch numbers to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_outputs(out: Path, kind: str, numbers: Dict[str, Any], fig) -> Dict[str, Path]:
    """OUT/KIND.json (numbers) and OUT/KIND.png (fig), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{kind}.json", out / f"{kind}.png"
    write_atomic(json_path, json.dumps(_plain(numbers), indent=1, allow_nan=False) + "\n")
    with replacing(png_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt().close(fig)
    return {"json": json_path, "png": png_path}


@dataclass
class Episode:
    """One real episode: obs [T+1], actions in [-1, 1] [T], rewards [T], the env state before
    each step (``mbpo_ray.envs.get_env_state``: MuJoCo's full integration state) and whether it
    ended by termination."""

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    states: List[Dict[str, Any]] = field(default_factory=list)
    terminated: bool = False

    def __len__(self) -> int:
        return self.act.shape[0]


def policy_actor(policy, device, deterministic: bool):
    def act(obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
        return policy.act(obs_t, deterministic=deterministic)[0].cpu().numpy()
    return act


def run_episodes(cfg, act, episodes: int, max_steps: int, seed: int, keep_states: bool = False) -> List[Episode]:
    """``episodes`` episodes of ``act(obs) -> action in [-1, 1]`` in the run's env (reset seeds
    EPISODE_SEED_BASE + seed + i), each at most ``max_steps`` steps (or the env's limit)."""
    env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
    scaler = ActionScaler(env.action_space)
    out = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=EPISODE_SEED_BASE + seed + i)
            all_obs, acts, rews, states = [obs], [], [], []
            terminated = False
            for _ in range(max_steps):
                if keep_states:
                    states.append(get_env_state(env))
                action = np.asarray(act(obs), dtype=np.float32)
                obs, reward, terminated, truncated, _ = env.step(scaler.to_env(action))
                all_obs.append(obs)
                acts.append(action)
                rews.append(float(reward))
                if terminated or truncated:
                    break
            out.append(Episode(np.asarray(all_obs, np.float32), np.asarray(acts, np.float32),
                               np.asarray(rews, np.float64), states, bool(terminated)))
    finally:
        env.close()
    return out


def spread_evenly(n_items: int, n_pick: int) -> List[int]:
    """``n_pick`` indices of ``range(n_items)`` spread evenly, first and last included."""
    if n_items <= n_pick:
        return list(range(n_items))
    return sorted({int(round(i * (n_items - 1) / (n_pick - 1))) for i in range(n_pick)}) if n_pick > 1 else [n_items - 1]


def loglinear_fit(x: Sequence[float], y: Sequence[float]) -> Optional[Dict[str, float]]:
    """Least-squares fit log y = a + b x over the points with finite positive y: the per-step
    growth factor exp(b) and the rate b; None with fewer than two such points."""
    pts = [(float(a), float(b)) for a, b in zip(x, y) if b is not None and math.isfinite(b) and b > 0]
    if len(pts) < 2:
        return None
    xs, ys = np.array([p[0] for p in pts]), np.log([p[1] for p in pts])
    b, a = np.polyfit(xs, ys, 1)
    return {"log_rate": float(b), "growth_per_step": float(math.exp(b)), "intercept": float(math.exp(a)),
            "points": len(pts)}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> Optional[Dict[str, float]]:
    """Least-squares line y = a + b x: slope b and intercept a; None with fewer than two points
    or no spread in x."""
    pts = [(float(a), float(b)) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 2 or np.ptp([p[0] for p in pts]) == 0:
        return None
    b, a = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return {"slope": float(b), "intercept": float(a), "points": len(pts)}


def rank_correlation(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation (Pearson's on the ranks; ties are rare for these floats)."""
    if len(x) < 3:
        return None
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def pearson(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def obs_scale(real_rows: torch.Tensor, layout) -> torch.Tensor:
    """The standard deviation of each observation dim in D_env (at least 1e-6): the unit of the
    normalised errors."""
    return real_rows[:, layout.obs].std(dim=0, unbiased=False).clamp_min(1e-6)
