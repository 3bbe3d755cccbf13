"""The dynamics ensemble's holdout error per target dimension, with and without scale-aware targets
(``model.normalize_targets``, docs/mbpo_plus.md#scale-aware-model-targets).

    .venv/bin/python benchmarks/model_targets.py [--env Hopper-v5] [--steps 10000] [--seeds 0 1] [--threads 1]

Collects ``--steps`` uniform-random transitions of the env (MBPO's warm-up data; the paper presets'
warm-up is 5,000 steps), then fits the env preset's ensemble (7 members, 5 elites, 4 x 200 SiLU, the
paper's decays and early stopping) on them twice per seed, the targets raw (the paper) and
standardised, from the same initial weights and the same holdout split. For each fit it records the
elites' holdout mean squared error of each target dimension (reward, then each obs change) in env
units, that error over the dimension's holdout variance, their means (``model/holdout_mse`` and
``model/holdout_nmse``), the fit's epochs and seconds.

Writes benchmarks/results/mbpo_plus/model_targets.json (``--out``) with the command, date and CPU.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.config import make_config  # noqa: E402
from mbpo_ray.process_setup import set_up as set_up_process  # noqa: E402
from mbpo_ray.data import ReplayBuffer  # noqa: E402
from mbpo_ray.envs import TrainingEnv, prepare_config  # noqa: E402
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble  # noqa: E402
from mbpo_ray.models.targets import fit_data_from_buffer  # noqa: E402
from machine import machine_stamp, write_results  # noqa: E402  (benchmarks/machine.py)


def collect(env_id: str, steps: int, seed: int):
    env = TrainingEnv(env_id, seed)
    buffer = ReplayBuffer(env.obs_dim, env.act_dim, steps)
    for _ in range(steps):
        step = env.step(env.random_action())
        row = buffer.layout.pack_numpy(step.obs, step.action, step.reward, step.next_obs, step.terminated)
        buffer.add_rows(torch.as_tensor(row)[None])
    return env.obs_dim, env.act_dim, fit_data_from_buffer(buffer)


def fit(model_cfg, obs_dim: int, act_dim: int, inputs, targets, seed: int, normalize: bool):
    cfg = copy.deepcopy(model_cfg)
    cfg.normalize_targets = normalize
    torch.manual_seed(seed)  # the same initial weights, holdout split and bootstrap for both
    model = ProbabilisticEnsemble(obs_dim, act_dim, cfg)
    trainer = EnsembleTrainer(model, cfg)
    started = time.perf_counter()
    metrics = trainer.fit(inputs, targets)
    seconds = time.perf_counter() - started
    # the holdout the fit used: the same permutation, drawn again from the same seed
    torch.manual_seed(seed)
    ProbabilisticEnsemble(obs_dim, act_dim, cfg)
    perm = torch.randperm(inputs.shape[0])
    holdout = perm[:min(int(inputs.shape[0] * cfg.holdout_ratio), cfg.max_holdout)]
    errors = trainer.member_errors(inputs[holdout], targets[holdout])[model.elite_idx].mean(0)
    variance = targets[holdout].var(0, unbiased=False)
    return {"normalize_targets": normalize, "seed": seed, "epochs": metrics["model/epochs"],
            "fit_seconds": round(seconds, 2), "holdout_mse": metrics["model/holdout_mse"],
            "holdout_nmse": metrics["model/holdout_nmse"],
            "per_dimension_mse": [float(e) for e in errors],
            "per_dimension_nmse": [float(e / v) if v > 1e-10 else None for e, v in zip(errors, variance)],
            "target_std": [float(s) for s in targets.std(0, unbiased=False)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/mbpo_plus/model_targets.json"))
    args = parser.parse_args()
    set_up_process(args.threads)
    cfg, _ = prepare_config(make_config(args.env, {"device": "cpu"}))
    obs_dim, act_dim, (inputs, targets) = collect(args.env, args.steps, seed=0)
    result = {"command": "benchmarks/model_targets.py " + " ".join(sys.argv[1:]), **machine_stamp(),
              "torch_threads": args.threads, "env": args.env, "transitions": args.steps,
              "dimensions": ["reward"] + [f"obs_change[{i}]" for i in range(obs_dim)], "fits": []}
    for seed in args.seeds:
        for normalize in (False, True):
            result["fits"].append(fit(cfg.model, obs_dim, act_dim, inputs, targets, seed, normalize))
            write_results(args.out, result)
            last = result["fits"][-1]
            print(f"seed {seed} normalize_targets={normalize}: holdout mse {last['holdout_mse']:.4f}, "
                  f"nmse {last['holdout_nmse']:.4f}, {last['epochs']} epochs, {last['fit_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
