"""Learning curves of MBPO with the paper presets, plotted against the paper's published points.

    .venv/bin/python benchmarks/learning_curve.py --env Hopper-v5 --steps 30000 --seeds 0
    .venv/bin/python benchmarks/learning_curve.py --env InvertedPendulum-v5 --steps 5000 --seeds 0 1 2
    .venv/bin/python benchmarks/learning_curve.py --env Hopper-v5 --plot-only
    .venv/bin/python benchmarks/learning_curve.py --env InvertedPendulum-v5 --steps 5000 --seeds 0 1 2 \
        --set precision=bf16 --results benchmarks/results/bf16_curves

Runs land in benchmarks/results/learning/ENV/seedS/ (``--results`` DIR: DIR/ENV/seedS/; config,
metrics.jsonl, curve.png; the checkpoint is not committed). An interrupted run is resumed when the script is started again.
The summary plot is benchmarks/results/learning/ENV.png (DIR/ENV.png) with the seeds' eval returns and the
paper's reference points (docs/published_results.md).
"""
from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results" / "learning"

# docs/published_results.md: deterministic-policy returns the paper reports (env steps, return).
PAPER_POINTS = {
    "Hopper-v5": [(15_000, 500), (40_000, 1000), (50_000, 2000), (72_500, 3000), (120_000, 3350)],
    "Walker2d-v5": [(40_000, 1000), (100_000, 3750), (300_000, 4750)],
    "HalfCheetah-v5": [(400_000, 10_500)],
    "InvertedPendulum-v5": [(15_000, 1000)],
}


def run_seed(env_id: str, steps: int, seed: int, overrides: dict, results: Path = RESULTS) -> RunDirectory:
    out = results / env_id / f"seed{seed}"
    run = RunDirectory(out)
    if run.checkpoint_path.exists():
        cfg = run.load_config()
        cfg.total_steps = max(cfg.total_steps, steps)
        last = run.load_checkpoint()["env_steps"]
        if last < cfg.total_steps:
            train(cfg, str(out), resume=True)
        return run
    cfg = make_config(env_id, {"total_steps": steps, "seed": seed, "device": "cpu", **overrides})
    train(cfg, str(out))
    return run


def plot(env_id: str, results: Path = RESULTS, note: str = "") -> Path:
    """The seeds' eval returns against the paper's points; ``note`` (the runs' overrides) goes in
    the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seed_dir in sorted((results / env_id).glob("seed*")):
        records = [r for r in RunDirectory(seed_dir).read_metrics() if "eval/return_mean" in r]
        if records:
            ax.plot([r["env_steps"] for r in records], [r["eval/return_mean"] for r in records],
                    label=f"mbpo-ray {seed_dir.name}")
    right = max([max(line.get_xdata()) for line in ax.get_lines()] or [1])
    points = PAPER_POINTS.get(env_id, [])
    shown = [(x, y) for x, y in points if x <= right * 1.05]
    if shown:
        ax.plot(*zip(*shown), "k--o", label="MBPO paper (approx.)")
    elif points:  # the paper's first point lies beyond this budget: show it as a level
        x, y = points[0]
        ax.axhline(y, color="k", linestyle="--", label=f"MBPO paper: {y} by {x:,} steps")
    ax.set_xlim(0, right * 1.05)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (deterministic policy)")
    ax.set_title(f"MBPO on {env_id}, paper preset" + (f"\n{note.lstrip(', ')}" if note else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = results / f"{env_id}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary(env_id: str, results: Path = RESULTS) -> dict:
    out = {"env": env_id, **machine_stamp(), "seeds": {}}
    for seed_dir in sorted((results / env_id).glob("seed*")):
        records = RunDirectory(seed_dir).read_metrics()
        if not records:
            continue
        curve = [(r["env_steps"], r["eval/return_mean"]) for r in records if "eval/return_mean" in r]
        first_900 = next((s for s, v in curve if v >= 900), None)
        out["seeds"][seed_dir.name] = {
            "env_steps": records[-1]["env_steps"],
            "final_eval_return": curve[-1][1],
            "best_eval_return": max(v for _, v in curve),
            "first_step_eval_ge_900": first_900,
            "wall_seconds": records[-1].get("perf/wall_seconds"),
            "seconds_per_env_step": sum(r["perf/epoch_seconds"] for r in records) / records[-1]["env_steps"],
            "curve": curve,
        }
    (results / f"{env_id}.json").write_text(json.dumps(out, indent=1))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", required=True)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the runs, plot and summary go (default benchmarks/results/learning)")
    args = parser.parse_args()
    from mbpo_ray.config import parse_override
    overrides = dict(parse_override(o) for o in args.overrides)
    if not args.plot_only:
        for seed in args.seeds:
            run_seed(args.env, args.steps or make_config(args.env).total_steps, seed, overrides, args.results)
    print(plot(args.env, args.results, "".join(f", {o}" for o in args.overrides)))
    for name, s in summary(args.env, args.results)["seeds"].items():
        print(name, {k: v for k, v in s.items() if k != "curve"})


if __name__ == "__main__":
    main()
