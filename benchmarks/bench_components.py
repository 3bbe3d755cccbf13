"""Speed of MBPO's parts with the Hopper-v5 preset on this machine.

  * model fit on 10k and 50k random-policy Hopper transitions: seconds per epoch, and the
    seconds and epochs of a refit with the paper's holdout early stopping;
  * rollouts: model transitions generated per second (100,000 start states, k = 1 and k = 5);
  * whole loop: env steps per second of the full MBPO loop after the random warm-up
    (G = 20 SAC updates per step, 100,000 rollouts every 250 steps = 400 per step, model refits).

    .venv/bin/python benchmarks/bench_components.py [--loop-steps 1000]

Writes benchmarks/results/components_speed.json.
"""
from __future__ import annotations

import argparse
import sys
import json
import time
from pathlib import Path

import torch

from mbpo_ray.algos.mbpo_loop import MBPOLoop
from mbpo_ray.config import make_config
from mbpo_ray.runtime.local import LocalRuntime
from mbpo_ray.rng import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results"


def filled_runtime(num_transitions: int, seed: int = 0) -> LocalRuntime:
    cfg = make_config("Hopper-v5", {"seed": seed, "device": "cpu", "total_steps": num_transitions + 1000})
    seed_everything(seed)
    runtime = LocalRuntime(cfg, torch.device("cpu"))
    for _ in range(num_transitions):
        runtime.env_step(random_action=True)
    return runtime


def bench_fit(sizes, first_fit_epochs: int = 20, refit_seconds_cap: float = 600.0):
    """A first fit from scratch (capped at ``first_fit_epochs``: from scratch the 1% rule can
    run for hundreds of epochs), then a refit of that warm model after 250 more transitions,
    with the paper's early stopping, as MBPO refits every 250 steps."""
    out = {}
    for n in sizes:
        runtime = filled_runtime(n)
        runtime.cfg.model.max_fit_epochs = first_fit_epochs
        first = runtime.fit_model()
        for _ in range(250):
            runtime.env_step(random_action=True)
        runtime.cfg.model.max_fit_epochs = None
        runtime.cfg.model.max_fit_seconds = refit_seconds_cap
        refit = runtime.fit_model()
        out[f"{n}"] = {
            "first_fit_epochs": first["model/epochs"],
            "seconds_per_epoch": first["model/fit_seconds"] / first["model/epochs"],
            "refit_seconds": refit["model/fit_seconds"], "refit_epochs": refit["model/epochs"],
            "refit_hit_seconds_cap": refit["model/fit_seconds"] >= refit_seconds_cap,
            "holdout_mse_after_refit": refit["model/holdout_mse"],
        }
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
    parser.add_argument("--loop-steps", type=int, default=500)
    parser.add_argument("--fit-sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--out", default=str(RESULTS / "components_speed.json"))
    args = parser.parse_args()
    result = {
        **machine_stamp(), "torch_threads": torch.get_num_threads(),
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
