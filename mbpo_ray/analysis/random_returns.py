"""Measure the return of a uniform-random policy on each supported env: the "0" of the report's
normalised scores (docs/published_results.md#normalised-scores, docs/report.md).

    .venv/bin/python -m mbpo_ray.analysis.random_returns --episodes 100 \
        --out benchmarks/results/random_returns.json

Episode i resets with seed ``seed + i``; actions are drawn uniformly from the env's action box by
one generator seeded with ``seed``. Episodes end as training episodes do: at termination or at the
env's 1,000-step time limit. The printed rows are what the table in
docs/published_results.md records; mbpo_ray/analysis/references.py keeps the numbers; ``--out``
writes them with every episode's return, the command, the date and the CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from mbpo_ray.devices import cpu_model


def random_returns(env_id: str, episodes: int, seed: int = 0) -> List[float]:
    from mbpo_ray.envs import make_env  # gymnasium and MuJoCo: only when measuring

    env = make_env(env_id, seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    returns = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def summary(returns: List[float]) -> Tuple[float, float]:
    """Mean and the standard error of the mean."""
    values = np.asarray(returns, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def main(argv: Optional[List[str]] = None) -> int:
    from mbpo_ray.config import SUPPORTED_ENVS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env", action="append", help="env id (repeatable; default: every supported env)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    record = {"command": " ".join(["python -m mbpo_ray.analysis.random_returns", *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.date.today().isoformat(), "cpu": cpu_model(), "episodes": args.episodes,
              "seed": args.seed, "envs": {}}
    for env_id in args.env or SUPPORTED_ENVS:
        returns = random_returns(env_id, args.episodes, args.seed)
        mean, sem = summary(returns)
        record["envs"][env_id] = {"mean": mean, "sem": sem, "returns": returns}
        print(f"| {env_id} | {mean:.1f} | {sem:.1f} | {args.episodes} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
