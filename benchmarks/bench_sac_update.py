"""SAC update speed: mbpo-ray's SAC vs Stable-Baselines3's SAC, side by side in one process.

Same problem for both: Hopper-v5 dimensions (obs 11, action 3), 2x256 ReLU policy and twin Q,
batch 256, Adam 3e-4, automatic temperature, target update every step; each samples its own
batches from its own replay buffer holding the same 10,000 transitions. Rounds alternate
between the two so that machine load affects both alike; the median round is reported.

    .venv/bin/python benchmarks/bench_sac_update.py [--rounds 7] [--updates 300]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mbpo_ray.agents.sac import SAC
from mbpo_ray.config import SACConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.envs import make_env
from machine import cpu_model  # benchmarks/machine.py

RESULTS = Path(__file__).parent / "results"


def make_transitions(n: int, obs_dim: int, act_dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, obs_dim)).astype(np.float32),
            rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
            rng.standard_normal(n).astype(np.float32),
            rng.standard_normal((n, obs_dim)).astype(np.float32),
            (rng.uniform(size=n) < 0.01).astype(np.float32))


def ours(data, obs_dim, act_dim, batch_size):
    agent = SAC(obs_dim, act_dim, SACConfig(batch_size=batch_size), torch.device("cpu"))
    buf = ReplayBuffer(obs_dim, act_dim, len(data[0]))
    buf.add(*data)

    def run(n):
        for _ in range(n):
            agent.update(*buf.sample(batch_size))
    return run


def sb3(data, obs_dim, act_dim, batch_size):
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    env = make_env("Hopper-v5", seed=0)
    model = SB3SAC("MlpPolicy", env, batch_size=batch_size, learning_starts=0, buffer_size=len(data[0]),
                   policy_kwargs=dict(net_arch=[256, 256]), device="cpu", seed=0, verbose=0)
    model.set_logger(configure(None, []))
    obs, act, rew, next_obs, done = data
    for i in range(len(obs)):
        model.replay_buffer.add(obs[i:i + 1], next_obs[i:i + 1], act[i:i + 1], rew[i:i + 1],
                                done[i:i + 1], [{}])

    def run(n):
        model.train(gradient_steps=n, batch_size=batch_size)
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "sac_update_speed.json"))
    args = parser.parse_args()
    obs_dim, act_dim = 11, 3
    torch.manual_seed(0)
    data = make_transitions(10_000, obs_dim, act_dim)
    runners = {"mbpo_ray": ours(data, obs_dim, act_dim, args.batch_size),
               "stable_baselines3": sb3(data, obs_dim, act_dim, args.batch_size)}
    for run in runners.values():  # warm-up
        run(20)
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(args.updates)
            times[name].append((time.perf_counter() - t0) / args.updates * 1e3)
    result = {
        "benchmark": "SAC gradient step incl. batch sampling, ms per update (median of rounds)",
        "machine": f"{cpu_model()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "batch_size": args.batch_size, "updates_per_round": args.updates, "rounds": args.rounds,
        "ms_per_update": {k: statistics.median(v) for k, v in times.items()},
        "all_rounds_ms": times,
    }
    result["speedup_vs_sb3"] = result["ms_per_update"]["stable_baselines3"] / result["ms_per_update"]["mbpo_ray"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("ms_per_update", "speedup_vs_sb3")}, indent=2))


if __name__ == "__main__":
    main()
