"""Envs without a paper preset, and what learning the termination rule costs (issue 12).

    .venv/bin/python benchmarks/any_env.py --jobs 2                      # everything below
    .venv/bin/python benchmarks/any_env.py --panels Pendulum-v1 --jobs 2  # one panel
    .venv/bin/python benchmarks/any_env.py --plot-only                   # summary of what has run

Three panels, 3 seeds each (`--seeds`), every run `mbpo-ray train ...` in its own process with
one torch thread (`--jobs` at a time):

- Pendulum-v1 and Reacher-v5 (no paper preset: the generic preset of
  docs/hyperparameters.md#the-generic-preset; neither env terminates, so the default learned
  termination stays "never"): MBPO against SAC (`--algo sac`, the paper's model-free baseline) at
  the same env-step budget;
- Hopper-v5 with its paper preset: MBPO with the known termination rule beside MBPO with
  `mbpo.termination=learned` (same seeds and budget): the cost of learning the rule.

Budgets (PANELS): Pendulum-v1 4,000 env steps (1,000 random + 3,000 learning: SAC reaches
about -200 there, so the panel shows which gets there first), Reacher-v5 3,000 (500 random +
2,500 learning), Hopper-v5 6,500 (its 5,000 random + 1,500 learning: the termination classifier
matters most while D_env is small). They fit a 2-core machine's session (an MBPO step costs
0.3-0.5 s there with one thread); give `--steps` for longer runs.

Runs land in benchmarks/results/any_env/runs/ENV/VARIANT/seedS/ (config, metrics, curve; the
checkpoint is not committed); a run with a checkpoint is resumed (or skipped when finished), so
the script can be stopped and started again. The summary is benchmarks/results/any_env/
any_env.json (per panel, variant and seed: the eval curve, the mean of the last three
evaluations, wall seconds; for learned termination the classifier's last holdout precision and
recall and the share of terminated model transitions; across seeds: the mean and a 95 %
bootstrap interval of that mean, crude with 3 seeds) and any_env.png (mean over seeds, min-max
shaded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mbpo_ray.run_dir import RunDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results" / "any_env"
FINAL_WINDOW = 3  # evaluations averaged for the "final" return

# panel -> env-step budget and variants (variant name -> extra command-line arguments)
PANELS: Dict[str, Dict] = {
    "Pendulum-v1": {"steps": 4_000, "variants": {"mbpo": ["--algo", "mbpo"], "sac": ["--algo", "sac"]}},
    "Reacher-v5": {"steps": 3_000, "variants": {"mbpo": ["--algo", "mbpo"], "sac": ["--algo", "sac"]}},
    "Hopper-v5": {"steps": 6_500, "variants": {
        "mbpo-known": ["--algo", "mbpo", "--set", "mbpo.termination=known"],
        "mbpo-learned": ["--algo", "mbpo", "--set", "mbpo.termination=learned"]}},
}


def run_dir(env_id: str, variant: str, seed: int) -> Path:
    return RESULTS / "runs" / env_id / variant / f"seed{seed}"


def command(env_id: str, variant: str, seed: int, steps: int) -> List[str]:
    out = run_dir(env_id, variant, seed)
    common = ["--no-progress", "--set", "torch_threads=1"]
    if (out / "checkpoint.pt").exists():
        return [sys.executable, "-m", "mbpo_ray", "train", "--resume", str(out), "--steps", str(steps), *common]
    return [sys.executable, "-m", "mbpo_ray", "train", "--env", env_id, *PANELS[env_id]["variants"][variant],
            "--steps", str(steps), "--seed", str(seed), "--device", "cpu", "--out", str(out), *common]


def finished(env_id: str, variant: str, seed: int, steps: int) -> bool:
    records = RunDirectory(run_dir(env_id, variant, seed)).read_metrics()
    return bool(records) and records[-1]["env_steps"] >= steps


def run_one(env_id: str, variant: str, seed: int, steps: int) -> str:
    label = f"{env_id} {variant} seed {seed}"
    if finished(env_id, variant, seed, steps):
        return f"{label}: already finished"
    out = run_dir(env_id, variant, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = command(env_id, variant, seed, steps)
    with open(out.parent / f"seed{seed}.log", "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    return f"{label}: exit {code}"


def bootstrap_mean_interval(values: List[float], draws: int = 10_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    means = rng.choice(values, size=(draws, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _last(records: List[dict], key: str) -> Optional[float]:
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def seed_summary(records: List[dict]) -> dict:
    evals = [r for r in records if "eval/return_mean" in r]
    returns = [r["eval/return_mean"] for r in evals]
    fitted = [r for r in records if "rollout/terminated_frac" in r]
    out = {"env_steps": evals[-1]["env_steps"], "final_return": returns[-1],
           "final_window_return": float(np.mean(returns[-FINAL_WINDOW:])), "best_return": max(returns),
           "wall_seconds": evals[-1].get("perf/wall_seconds"),
           "curve": [(r["env_steps"], r["eval/return_mean"]) for r in evals]}
    if fitted:
        out["rollout_terminated_frac_mean"] = float(np.mean([r["rollout/terminated_frac"] for r in fitted]))
    for key in ("model/termination_precision", "model/termination_recall", "model/termination_positives"):
        value = _last(records, key)
        if value is not None:
            out["last_" + key.split("/")[1]] = value
    return out


def summary(panels: List[str]) -> dict:
    out = {**machine_stamp(),
           "final_window_evals": FINAL_WINDOW, "panels": {}}
    for env_id in panels:
        panel = {"steps": PANELS[env_id]["steps"], "variants": {}}
        for variant in PANELS[env_id]["variants"]:
            seeds = {}
            for seed_dir in sorted((RESULTS / "runs" / env_id / variant).glob("seed*")):
                records = RunDirectory(seed_dir).read_metrics()
                if any("eval/return_mean" in r for r in records):
                    seeds[seed_dir.name] = seed_summary(records)
            if seeds:
                finals = [s["final_window_return"] for s in seeds.values()]
                panel["variants"][variant] = {"seeds": seeds, "final_window_mean": float(np.mean(finals)),
                                              "final_window_ci95": bootstrap_mean_interval(finals)}
        out["panels"][env_id] = panel
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "any_env.json").write_text(json.dumps(out, indent=1))
    return out


def plot(result: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(result["panels"])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, env_id in zip(axes[0], panels):
        for variant, v in result["panels"][env_id]["variants"].items():
            curves = [dict(s["curve"]) for s in v["seeds"].values()]
            steps = sorted(set.intersection(*[set(c) for c in curves]))  # reached by every seed
            if not steps:
                continue
            table = np.array([[c[x] for x in steps] for c in curves])
            line, = ax.plot(steps, table.mean(axis=0), label=f"{variant} ({len(curves)} seeds)")
            ax.fill_between(steps, table.min(axis=0), table.max(axis=0), color=line.get_color(), alpha=0.15)
        ax.set_title(env_id)
        ax.set_xlabel("env steps (warm-up included)")
        ax.set_ylabel("eval return (mean over seeds; min-max shaded)")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(loc="best")
    fig.tight_layout()
    path = RESULTS / "any_env.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panels", nargs="+", default=list(PANELS), choices=list(PANELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="override every chosen panel's budget (e.g. a smoke test)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--results", type=Path, help="where runs and the summary go (default "
                        "benchmarks/results/any_env)")
    args = parser.parse_args()
    if args.results is not None:
        RESULTS = args.results
    if not args.plot_only:
        jobs = [(env_id, variant, seed, args.steps or PANELS[env_id]["steps"])
                for env_id in args.panels for seed in args.seeds for variant in PANELS[env_id]["variants"]]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for message in pool.map(lambda job: run_one(*job), jobs):
                print(message, flush=True)
    result = summary(list(PANELS))
    print(plot(result))
    for env_id, panel in result["panels"].items():
        for variant, v in panel["variants"].items():
            lo, hi = v["final_window_ci95"]
            print(f"{env_id:12s} {variant:13s} final-window mean {v['final_window_mean']:9.1f}  "
                  f"95% CI [{lo:.1f}, {hi:.1f}]  "
                  + "  ".join(f"{k}={s['final_window_return']:.1f}" for k, s in v["seeds"].items()))


if __name__ == "__main__":
    main()
