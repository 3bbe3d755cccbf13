"""The Ray runtime against the local one: learning curves (sync) and wall-clock (sync vs async).

    .venv/bin/python benchmarks/ray_runtime.py curves --env InvertedPendulum-v5 --steps 5000 --seeds 0 1 2
    .venv/bin/python benchmarks/ray_runtime.py curves --env Hopper-v5 --steps 15000 --seeds 0
    .venv/bin/python benchmarks/ray_runtime.py timing --env Hopper-v5 --warmup 2000 --measure 2000

curves: MBPO with the env's paper preset on `--runtime ray --schedule sync` into
results/ray/ENV/sync/seedS/, plotted with the local runtime's runs of the same preset and seeds
(results/learning/ENV/seedS/, made by learning_curve.py) in results/ray/ENV.png and ENV.json.

timing: the Hopper preset (G=20, 400 rollouts per env step, refit every 250 steps) with the
uniform-random warm-up shortened to `--warmup` steps so that the runs reach the steady state
quickly, then `--measure` env steps timed per epoch, once with the sync and once with the async
schedule, in one process one after the other. Reported per 1,000 env steps: wall-clock of each
schedule, and the learner's own busy time for the same number of SAC updates (what async would
cost if model fits, rollouts and collection were free). Written to results/ray/timing.json.
"""
from __future__ import annotations

import argparse
import sys
import json
import shutil
import time
from pathlib import Path

import numpy as np

from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results" / "ray"
LOCAL = Path(__file__).parent / "results" / "learning"


def curves(env_id: str, steps: int, seeds, overrides: dict) -> None:
    for seed in seeds:
        out = RESULTS / env_id / "sync" / f"seed{seed}"
        run = RunDirectory(out)
        if run.checkpoint_path.exists():
            cfg = run.load_config()
            cfg.total_steps = max(cfg.total_steps, steps)
            if run.load_checkpoint()["env_steps"] < cfg.total_steps:
                train(cfg, str(out), resume=True)
            continue
        cfg = make_config(env_id, {"total_steps": steps, "seed": seed, "device": "cpu", "runtime": "ray",
                                   "ray.schedule": "sync", **overrides})
        train(cfg, str(out))


def plot_curves(env_id: str) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {"env": env_id, **machine_stamp(), "runs": {}}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, root, style in (("local", LOCAL / env_id, "-"), ("ray sync", RESULTS / env_id / "sync", "--")):
        for seed_dir in sorted(root.glob("seed*")):
            records = [r for r in RunDirectory(seed_dir).read_metrics() if "eval/return_mean" in r]
            if not records:
                continue
            curve = [(r["env_steps"], r["eval/return_mean"]) for r in records]
            ax.plot(*zip(*curve), style, label=f"{label} {seed_dir.name}")
            summary["runs"][f"{label} {seed_dir.name}"] = {
                "curve": curve,
                "seconds_per_env_step": sum(r["perf/epoch_seconds"] for r in records) / records[-1]["env_steps"]}
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (deterministic policy)")
    ax.set_title(f"MBPO on {env_id}: local runtime vs Ray runtime (sync schedule)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{env_id}.png", dpi=100)
    plt.close(fig)
    (RESULTS / f"{env_id}.json").write_text(json.dumps(summary, indent=1))
    return summary


def timing(env_id: str, warmup: int, measure: int, seed: int, overrides: dict) -> dict:
    result = {"env": env_id, **machine_stamp(),
              "warmup_steps": warmup, "measured_steps": measure, "seed": seed, "overrides": overrides}
    for schedule in ("sync", "async"):
        out = RESULTS / "timing" / schedule
        shutil.rmtree(out, ignore_errors=True)
        cfg = make_config(env_id, {"total_steps": warmup + measure, "seed": seed, "device": "cpu",
                                   "runtime": "ray", "ray.schedule": schedule,
                                   "mbpo.init_random_steps": warmup, **overrides})
        start = time.perf_counter()
        train(cfg, str(out), progress=False)
        records = RunDirectory(out).read_metrics()
        timed = [r for r in records if r["env_steps"] > warmup + cfg.mbpo.epoch_length]  # steady state
        steps = sum(cfg.mbpo.epoch_length for _ in timed)
        wall = sum(r["perf/epoch_seconds"] for r in timed)
        updates = sum(r.get("train/updates", 0) for r in timed)
        learner_rate = np.mean([r["perf/learner_updates_per_s"] for r in timed])
        result[schedule] = {
            "wall_seconds_per_1000_steps": 1000 * wall / steps,
            "sac_updates_per_env_step": updates / steps,
            "learner_updates_per_s": float(learner_rate),
            "sac_update_seconds_per_1000_steps": 1000 * (updates / steps) / learner_rate,
            "collector_policy_lag": float(np.mean([r.get("perf/collector_policy_lag", 0) for r in timed])),
            "epochs": [{k: v for k, v in r.items() if k.startswith(("perf/", "env_steps", "eval/return_mean"))}
                       for r in timed],
            "total_run_seconds": time.perf_counter() - start,
        }
    result["async_speedup_over_sync"] = (result["sync"]["wall_seconds_per_1000_steps"]
                                         / result["async"]["wall_seconds_per_1000_steps"])
    result["async_wall_over_sac_updates_alone"] = (result["async"]["wall_seconds_per_1000_steps"]
                                                   / result["async"]["sac_update_seconds_per_1000_steps"])
    (RESULTS / "timing.json").write_text(json.dumps(result, indent=1))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curves")
    c.add_argument("--env", required=True)
    c.add_argument("--steps", type=int, required=True)
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c.add_argument("--set", dest="overrides", action="append", default=[])
    c.add_argument("--plot-only", action="store_true")
    t = sub.add_parser("timing")
    t.add_argument("--env", default="Hopper-v5")
    t.add_argument("--warmup", type=int, default=2000)
    t.add_argument("--measure", type=int, default=2000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from mbpo_ray.config import parse_override
    overrides = dict(parse_override(o) for o in args.overrides)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.command == "curves":
        if not args.plot_only:
            curves(args.env, args.steps, args.seeds, overrides)
        for name, run in plot_curves(args.env)["runs"].items():
            print(name, run["curve"][-1], f"{run['seconds_per_env_step']:.3f} s/step")
    else:
        result = timing(args.env, args.warmup, args.measure, args.seed, overrides)
        for schedule in ("sync", "async"):
            r = result[schedule]
            print(f"{schedule:5s} {r['wall_seconds_per_1000_steps']:.1f} s / 1000 steps; SAC updates alone "
                  f"{r['sac_update_seconds_per_1000_steps']:.1f} s; G achieved {r['sac_updates_per_env_step']:.2f}")
        print(f"async speed-up {result['async_speedup_over_sync']:.2f}x; async / SAC-updates-alone "
              f"{result['async_wall_over_sac_updates_alone']:.2f}")


if __name__ == "__main__":
    main()
