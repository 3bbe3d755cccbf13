"""What Ray Tune costs: one MBPO run as a one-trial study against the same run by `mbpo-ray train`.

    .venv/bin/python benchmarks/tune_overhead.py                 # InvertedPendulum-v5, 1,500 env steps
    .venv/bin/python benchmarks/tune_overhead.py --steps 2500 --pairs 2

Both sides get the same config (the env's and the algorithm's presets, seed 0, one torch thread) and
run one after the other in the order train, sweep, sweep, train, ... (`--pairs` pairs, mirrored so
that a drift of the machine's speed falls on both sides alike). Ray starts its worker processes, and
so the trial, at niceness 15 (docs/sweeps.md); here the sweep runs with `RAY_worker_niceness=0` so
that both sides have the priority of a process started by hand.

Measured per run: the whole command's wall-clock (the sweep's includes starting and stopping Ray),
and the training loop's own time (the sum of `perf/epoch_seconds` over the run's records, the same
clock in both). The two runs' eval returns are compared as well: the same config on the same
machine must give the same numbers, which shows that the trial ran what `train` ran.
Writes benchmarks/results/sweeps/tune_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import yaml

from mbpo_ray.run_dir import RunDirectory
from machine import cpu_model  # benchmarks/machine.py

RESULTS = Path(__file__).parent / "results" / "sweeps"




def loop_seconds(run: Path) -> float:
    return sum(r["perf/epoch_seconds"] for r in RunDirectory(run).read_metrics())


def evals(run: Path) -> List[float]:
    return [r["eval/return_mean"] for r in RunDirectory(run).read_metrics()]


def run_train(env_id: str, steps: int, out: Path) -> Dict:
    cmd = [sys.executable, "-m", "mbpo_ray", "train", "--env", env_id, "--algo", "mbpo", "--steps", str(steps),
           "--seed", "0", "--device", "cpu", "--out", str(out), "--no-progress", "--set", "torch_threads=1"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"command_seconds": time.perf_counter() - start, "loop_seconds": loop_seconds(out), "evals": evals(out)}


def run_sweep(env_id: str, steps: int, out: Path, scratch: Path) -> Dict:
    study = {"name": "tune_overhead", "algorithms": ["mbpo"], "envs": [env_id], "seeds": [0],
             "budget": {"env_steps": steps}, "overrides": {"all": {"device": "cpu"}}, "max_concurrent_trials": 1,
             "wandb": {"mode": "disabled"}}
    study_file = scratch / "tune_overhead.yaml"
    study_file.write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "mbpo_ray", "sweep", str(study_file), "--out", str(out)]
    env = dict(os.environ, RAY_worker_niceness="0")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    elapsed = time.perf_counter() - start
    trial = out / "runs" / f"mbpo-{env_id}-seed0"
    return {"command_seconds": elapsed, "loop_seconds": loop_seconds(trial), "evals": evals(trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--pairs", type=int, default=1, help="train/sweep pairs, run as train, sweep, sweep, train, ...")
    args = parser.parse_args()

    order: List[str] = []
    for i in range(args.pairs):
        order += ["train", "sweep"] if i % 2 == 0 else ["sweep", "train"]
    runs: Dict[str, List[Dict]] = {"train": [], "sweep": []}
    with tempfile.TemporaryDirectory(prefix="tune_overhead_") as tmp:
        scratch = Path(tmp)
        for n, side in enumerate(order):
            out = scratch / f"{side}{n}"
            result = run_sweep(args.env, args.steps, out, scratch) if side == "sweep" else \
                run_train(args.env, args.steps, out)
            print(f"{side}: command {result['command_seconds']:.1f} s, loop {result['loop_seconds']:.1f} s", flush=True)
            runs[side].append(result)
            shutil.rmtree(out, ignore_errors=True)

    def mean(side: str, key: str) -> float:
        return sum(r[key] for r in runs[side]) / len(runs[side])

    summary = {
        "command": " ".join(["benchmarks/tune_overhead.py", "--env", args.env, "--steps", str(args.steps),
                             "--pairs", str(args.pairs)]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "env": args.env, "steps": args.steps, "order": order, "runs": runs,
        "loop_ratio_sweep_over_train": mean("sweep", "loop_seconds") / mean("train", "loop_seconds"),
        "command_ratio_sweep_over_train": mean("sweep", "command_seconds") / mean("train", "command_seconds"),
        "same_eval_returns": all(r["evals"] == runs["train"][0]["evals"] for r in runs["train"] + runs["sweep"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tune_overhead.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"training loop: sweep / train = {summary['loop_ratio_sweep_over_train']:.3f}; whole command: "
          f"{summary['command_ratio_sweep_over_train']:.3f}; same eval returns: {summary['same_eval_returns']}")


if __name__ == "__main__":
    main()
