"""MBPO's learning curves under bf16 beside the committed float32 ones: the runs the default
``precision`` waits for (docs/precision.md#why-the-default-is-float32).

    .venv/bin/python benchmarks/bf16_vs_float32.py --out benchmarks/results/bf16_curves/compare.json

bf16 runs: benchmarks/results/bf16_curves/ENV/seedS/ (benchmarks/learning_curve.py with
``--set precision=bf16 --results benchmarks/results/bf16_curves``). float32 runs: the learning
curves (benchmarks/results/learning/ENV/seedS/) and, for HalfCheetah-v5, MBPO's runs of the
baselines (benchmarks/results/baselines/HalfCheetah-v5/mbpo/seedS/); the same presets. Per env
and precision: each seed's eval returns, its last eval, the mean of its last three evals and its
first eval at or above the env's level (where one is set), over the env steps both precisions
reached, and P(bf16 > float32) over pairs of seeds on the last-three mean; a figure per env (each seed's curve, float32 and bf16 in two colours) beside the file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.analysis.stats import task_improvement  # noqa: E402
from mbpo_ray.run_dir import RunDirectory  # noqa: E402
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

RESULTS = REPO / "benchmarks" / "results"
FLOAT32 = {"InvertedPendulum-v5": RESULTS / "learning" / "InvertedPendulum-v5",
           "HalfCheetah-v5": RESULTS / "baselines" / "HalfCheetah-v5" / "mbpo",
           "Hopper-v5": RESULTS / "learning" / "Hopper-v5"}
BF16 = RESULTS / "bf16_curves"
# the return a seed's first eval at or above is reported (InvertedPendulum's ceiling is 1000;
# the Hopper level the learning-curve summaries use); None: none reported
LEVEL = {"InvertedPendulum-v5": 900, "HalfCheetah-v5": None, "Hopper-v5": 900}


def curves(folder: Path) -> dict:
    out = {}
    for seed_dir in sorted(folder.glob("seed*")):
        curve = [(r["env_steps"], r["eval/return_mean"]) for r in RunDirectory(seed_dir).read_metrics()
                 if "eval/return_mean" in r]
        if curve:
            out[seed_dir.name] = curve
    return out


def seed_summary(curve: list, level) -> dict:
    returns = [v for _, v in curve]
    return {"env_steps": curve[-1][0], "last_eval": returns[-1], "last_three_mean": statistics.mean(returns[-3:]),
            "first_step_at_level": next((s for s, v in curve if level is not None and v >= level), None),
            "curve": curve}


def compare(env_id: str) -> dict:
    runs = {"float32": curves(FLOAT32[env_id]), "bf16": curves(BF16 / env_id)}
    if not runs["bf16"] or not runs["float32"]:
        return {}
    # over the steps both precisions reached in every seed
    horizon = min(c[-1][0] for by_seed in runs.values() for c in by_seed.values())
    out = {"level": LEVEL[env_id], "env_steps": horizon}
    for precision, by_seed in runs.items():
        seeds = {s: seed_summary([p for p in c if p[0] <= horizon], LEVEL[env_id]) for s, c in by_seed.items()}
        out[precision] = {"seeds": seeds,
                          "mean_last_eval": statistics.mean(s["last_eval"] for s in seeds.values()),
                          "mean_last_three": statistics.mean(s["last_three_mean"] for s in seeds.values())}
    # P(bf16 > float32) over every pair of seeds, on the mean of the last three evals (the
    # report's probability of improvement, docs/report.md; 0.5: neither ahead)
    out["p_bf16_above_float32"] = float(task_improvement(
        [s["last_three_mean"] for s in out["bf16"]["seeds"].values()],
        [s["last_three_mean"] for s in out["float32"]["seeds"].values()]))
    return out


def plot(env_id: str, result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for precision, colour in (("float32", "tab:blue"), ("bf16", "tab:orange")):
        for i, (seed, s) in enumerate(result[precision]["seeds"].items()):
            ax.plot(*zip(*s["curve"]), color=colour, alpha=0.8, label=precision if i == 0 else None)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (deterministic policy)")
    ax.set_title(f"MBPO on {env_id}, paper preset: float32 and bf16, one line per seed", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(BF16 / "compare.json"))
    args = parser.parse_args(argv)
    result = {"command": "python benchmarks/bf16_vs_float32.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              **machine_stamp(), "envs": {}}
    for env_id in FLOAT32:
        env_result = compare(env_id)
        if not env_result:
            print(f"{env_id}: no bf16 runs yet")
            continue
        result["envs"][env_id] = env_result
        plot(env_id, env_result, Path(args.out).parent / f"compare_{env_id}.png")
        print(env_id, f"to {env_result['env_steps']} steps:",
              {p: {s: (v["last_eval"], round(v["last_three_mean"], 1), v["first_step_at_level"])
                   for s, v in env_result[p]["seeds"].items()} for p in ("float32", "bf16")})
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
