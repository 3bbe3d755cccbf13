"""Every algorithm on one env, several seeds, curves side by side (issue: baselines).

    .venv/bin/python benchmarks/baselines.py --env InvertedPendulum-v5 --steps 5000 --seeds 0 1 2
    .venv/bin/python benchmarks/baselines.py --env HalfCheetah-v5 --steps 10000 --seeds 0 1 2 \
        --algos sac steve pets rllib-sac --algo-set pets:pets.population=200 --jobs 2
    .venv/bin/python benchmarks/baselines.py --env HalfCheetah-v5 --plot-only

Each run is `mbpo-ray train --algo ALGO ...` in its own process (one torch thread each, `--jobs`
at a time) into benchmarks/results/baselines/ENV/ALGO/seedS/; a run that already has a
checkpoint is resumed (or skipped when finished). The summary is ENV.png (mean over seeds,
min-max shaded) and ENV.json (per algorithm and seed: the curve, the final return, the mean of
the last three evaluations; across seeds: mean and a 95% bootstrap interval of that mean).
With 3 seeds the interval is crude; it is there so that no single number is read alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np

from mbpo_ray.config import ALGOS
from mbpo_ray.run_dir import RunDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results" / "baselines"
FINAL_WINDOW = 3  # evaluations averaged for the "final" return


def run_dir(env_id: str, algo: str, seed: int) -> Path:
    return RESULTS / env_id / algo / f"seed{seed}"


def command(env_id: str, algo: str, seed: int, steps: int, overrides: List[str]) -> List[str]:
    out = run_dir(env_id, algo, seed)
    threads = ["--set", "torch_threads=1"]
    if (out / "checkpoint.pt").exists():
        return [sys.executable, "-m", "mbpo_ray", "train", "--resume", str(out), "--steps", str(steps),
                "--no-progress", *threads]
    sets = [arg for o in overrides for arg in ("--set", o)]
    return [sys.executable, "-m", "mbpo_ray", "train", "--algo", algo, "--env", env_id, "--steps", str(steps),
            "--seed", str(seed), "--device", "cpu", "--out", str(out), "--no-progress", *threads, *sets]


def finished(env_id: str, algo: str, seed: int, steps: int) -> bool:
    records = RunDirectory(run_dir(env_id, algo, seed)).read_metrics()
    return bool(records) and records[-1]["env_steps"] >= steps


def run_one(env_id: str, algo: str, seed: int, steps: int, overrides: List[str]) -> str:
    if finished(env_id, algo, seed, steps):
        return f"{algo} seed {seed}: already finished"
    out = run_dir(env_id, algo, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = command(env_id, algo, seed, steps, overrides)
    with open(out.parent / f"seed{seed}.log", "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    return f"{algo} seed {seed}: exit {code}"


def load_curves(env_id: str) -> Dict[str, Dict[str, List]]:
    curves: Dict[str, Dict[str, List]] = {}
    for algo in ALGOS:
        for seed_dir in sorted((RESULTS / env_id / algo).glob("seed*")):
            records = [r for r in RunDirectory(seed_dir).read_metrics() if "eval/return_mean" in r]
            if records:
                curves.setdefault(algo, {})[seed_dir.name] = [
                    (r["env_steps"], r["eval/return_mean"], r.get("perf/wall_seconds")) for r in records]
    return curves


def bootstrap_mean_interval(values: List[float], draws: int = 10_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    means = rng.choice(values, size=(draws, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary(env_id: str) -> dict:
    out = {"env": env_id, **machine_stamp(),
           "final_window_evals": FINAL_WINDOW, "algorithms": {}}
    for algo, seeds in load_curves(env_id).items():
        per_seed = {}
        for name, curve in seeds.items():
            returns = [v for _, v, _ in curve]
            per_seed[name] = {"env_steps": curve[-1][0], "final_return": returns[-1],
                              "final_window_return": float(np.mean(returns[-FINAL_WINDOW:])),
                              "best_return": max(returns), "wall_seconds": curve[-1][2],
                              "curve": [(s, v) for s, v, _ in curve]}
        finals = [s["final_window_return"] for s in per_seed.values()]
        out["algorithms"][algo] = {
            "seeds": per_seed,
            "final_window_mean": float(np.mean(finals)),
            "final_window_ci95": bootstrap_mean_interval(finals),
        }
    (RESULTS / f"{env_id}.json").write_text(json.dumps(out, indent=1))
    return out


def plot(env_id: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for algo, seeds in load_curves(env_id).items():
        # the env steps every seed has reached
        steps = sorted(set.intersection(*[{s for s, _, _ in c} for c in seeds.values()]))
        if not steps:
            continue
        table = np.array([[dict((s, v) for s, v, _ in c)[x] for x in steps] for c in seeds.values()])
        line, = ax.plot(steps, table.mean(axis=0), label=f"{algo} ({len(seeds)} seeds)")
        ax.fill_between(steps, table.min(axis=0), table.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (mean over seeds; min-max shaded)")
    ax.set_title(f"{env_id}: every algorithm, same budget")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path = RESULTS / f"{env_id}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--algo-set", action="append", default=[], metavar="ALGO:FIELD=VALUE",
                        help="a config override for one algorithm (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    if not args.plot_only:
        if args.steps is None:
            parser.error("--steps is required unless --plot-only")
        overrides: Dict[str, List[str]] = {a: [] for a in args.algos}
        for item in args.algo_set:
            algo, _, setting = item.partition(":")
            if algo not in ALGOS or "=" not in setting:
                parser.error(f"--algo-set {item!r}: expected ALGO:FIELD=VALUE with ALGO one of {', '.join(ALGOS)}")
            overrides.setdefault(algo, []).append(setting)
        jobs = [(args.env, a, s, args.steps, overrides[a]) for a in args.algos for s in args.seeds]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for message in pool.map(lambda job: run_one(*job), jobs):
                print(message, flush=True)
    print(plot(args.env))
    for algo, s in summary(args.env)["algorithms"].items():
        lo, hi = s["final_window_ci95"]
        print(f"{algo:10s} final-window mean {s['final_window_mean']:9.1f}  95% CI [{lo:.1f}, {hi:.1f}]  "
              + "  ".join(f"{k}={v['final_window_return']:.1f}" for k, v in s["seeds"].items()))


if __name__ == "__main__":
    main()
