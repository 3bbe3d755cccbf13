"""Evaluation shared by every algorithm: returns of a policy on fresh episodes of the real env
(docs/metrics.md, "eval"), reported under the same ``eval/`` keys."""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np


def evaluate_policy(env, act: Callable[[np.ndarray], np.ndarray], episodes: int,
                    seed: int) -> Dict[str, float]:
    """Run ``episodes`` episodes (reset seeds seed, seed+1, ...) with ``act(obs) -> env action``."""
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    return eval_record(returns, lengths)


def eval_record(returns, lengths) -> Dict[str, float]:
    return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
            "eval/return_min": float(np.min(returns)), "eval/return_max": float(np.max(returns)),
            "eval/episode_length": float(np.mean(lengths))}
