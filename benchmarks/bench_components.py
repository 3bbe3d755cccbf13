"""Speed of MBPO's parts with the Hopper-v5 preset on this machine.

  * model fit: seconds for one full fit (holdout early stopping, paper settings) on 10k and 50k
    real Hopper transitions, and seconds per epoch;
  * rollouts: model transitions generated per second (100,000 start states, k = 1 and k = 5);
  * whole loop: env steps per second of the full MBPO loop after the random warm-up
    (G = 20 SAC updates per step, 100,000 rollouts every 250 steps = 400 per step, model refits).

    .venv/bin/python benchmarks/bench_components.py [--loop-steps 1000]

Writes benchmarks/results/components_speed.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mbpo_ray.algos.mbpo import MBPOLoop
from mbpo_ray.config import make_config
from mbpo_ray.runtime.local import LocalRuntime
from mbpo_ray.train import seed_everything

RESULTS = Path(__file__).parent / "results"


def filled_runtime(num_transitions: int, seed: int = 0) -> LocalRuntime:
    cfg = make_config("Hopper-v5", {"seed": seed, "device": "cpu", "total_steps": max(num_transitions, 10_000)})
    seed_everything(seed)
    runtime = LocalRuntime(cfg, torch.device("cpu"))
    for _ in range(num_transitions):
        runtime.env_step(random_action=True)
    return runtime


def bench_fit(sizes):
    out = {}
    for n in sizes:
        runtime = filled_runtime(n)
        metrics = runtime.fit_model()
        out[f"{n}"] = {"fit_seconds": metrics["model/fit_seconds"], "epochs": metrics["model/epochs"],
                       "seconds_per_epoch": metrics["model/fit_seconds"] / metrics["model/epochs"],
                       "holdout_mse": metrics["model/holdout_mse"]}
        print("fit", n, out[f"{n}"], flush=True)
    return out


def bench_rollouts(ks=(1, 5), start_states=100_000):
    runtime = filled_runtime(10_000)
    runtime.fit_model()
    out = {}
    for k in ks:
        capacity = start_states * k
        runtime.generate_rollouts(1000, k, capacity)  # warm-up
        t0 = time.perf_counter()
        m = runtime.generate_rollouts(start_states, k, capacity)
        secs = time.perf_counter() - t0
        out[f"k={k}"] = {"seconds": secs, "transitions": m["rollout/transitions"],
                         "transitions_per_second": m["rollout/transitions"] / secs}
        print("rollout", k, out[f"k={k}"], flush=True)
    return out


def bench_loop(loop_steps: int):
    cfg = make_config("Hopper-v5", {"seed": 0, "device": "cpu", "eval_episodes": 1,
                                    "total_steps": 5000 + loop_steps})
    seed_everything(0)
    runtime = LocalRuntime(cfg, torch.device("cpu"))
    loop = MBPOLoop(cfg, runtime)
    while loop.state.env_steps < 5000:
        loop.step()
    loop.end_epoch()
    t0 = time.perf_counter()
    record = None
    while loop.state.env_steps < cfg.total_steps:
        record = loop.step() or record
    secs = time.perf_counter() - t0
    phases = {k: v for k, v in record.items() if k.startswith("perf/") and k.endswith("_seconds")}
    out = {"env_steps": loop_steps, "seconds": secs, "env_steps_per_second": loop_steps / secs,
           "seconds_per_env_step": secs / loop_steps, "last_epoch_phase_seconds": phases}
    print("loop", out, flush=True)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop-steps", type=int, default=1000)
    parser.add_argument("--fit-sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--out", default=str(RESULTS / "components_speed.json"))
    args = parser.parse_args()
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "preset": "Hopper-v5 (paper): 7 members x 4x200 SiLU, batch 256, G=20, 100k rollouts / 250 steps",
        "model_fit": bench_fit(args.fit_sizes),
        "rollouts": bench_rollouts(),
        "whole_loop": bench_loop(args.loop_steps),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
