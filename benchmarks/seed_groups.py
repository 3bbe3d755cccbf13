"""Throughput of seed groups (`mbpo-ray train --seeds`, docs/seed_groups.md): 1, 4 and 8 seeds
per process with the Hopper-v5 preset, on the CPU or a GPU (``--device``).

Three figures per group size:
  * the stacked SAC update: ms per update of all seeds, and per seed (1 seed: SAC.update alone);
  * the stacked model fit: ms per fit epoch of all seeds (``--fit-size`` transitions each, the
    preset's ensemble), stacked (``StackedFit``) and as separate fits one after another;
  * the whole loop: wall-clock per env step of the group after a shortened random warm-up
    (``--warmup`` steps, the preset's 5,000 cut), over ``--steps`` learning steps (one model fit
    and one rollout batch per 250 steps, as the preset has them), from the runs' own
    perf/wall_seconds; 1 seed is a plain `mbpo-ray train` run.

    .venv/bin/python benchmarks/seed_groups.py --out benchmarks/results/seed_groups_cpu.json
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from mbpo_ray.agents.sac import SAC
from mbpo_ray.agents.stacked import StackedUpdate
from mbpo_ray.config import SACConfig, make_config
from mbpo_ray.process_setup import set_up as set_up_process
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.stacked_fit import StackedFit
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.seed_group import train_group
from mbpo_ray.train import train
from machine import cpu_model, write_results  # benchmarks/machine.py

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256  # Hopper-v5's sizes, the preset's batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_ms(num_seeds: int, device: torch.device, updates: int, graphed: bool = False) -> float:
    """ms per update of all ``num_seeds`` seeds (the best of 3 rounds); ``graphed``: sac.cuda_graph."""
    agents = []
    for seed in range(num_seeds):
        torch.manual_seed(seed)
        agents.append(SAC(OBS_DIM, ACT_DIM, SACConfig(batch_size=BATCH, cuda_graph=graphed), device))
    stacked = StackedUpdate(agents) if num_seeds > 1 else None
    batches = [(torch.randn(BATCH, OBS_DIM, device=device), torch.rand(BATCH, ACT_DIM, device=device) * 2 - 1,
                torch.randn(BATCH, device=device), torch.randn(BATCH, OBS_DIM, device=device),
                torch.zeros(BATCH, device=device)) for _ in range(num_seeds)]

    def one():
        if stacked is None:
            agents[0].update(*batches[0])
        else:
            stacked.update(batches, [a.draw_noise(BATCH) for a in agents])

    for _ in range(10):
        one()
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(updates):
            one()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / updates)
    return best * 1e3


def fit_epoch_ms(num_seeds: int, device: torch.device, size: int, epochs: int = 3, graphed: bool = False) -> dict:
    """ms per fit epoch of ``num_seeds`` Hopper-sized ensembles on ``size`` transitions each:
    stacked and separate (each fit runs exactly ``epochs`` epochs; the best of 2 rounds)."""
    model_cfg = make_config("Hopper-v5", {"model.max_fit_epochs": epochs, "model.early_stop_patience": 10 ** 6,
                                          "model.cuda_graph": graphed}).model
    in_dim = OBS_DIM + ACT_DIM
    data = [(torch.randn(size, in_dim, device=device), torch.randn(size, OBS_DIM + 1, device=device))
            for _ in range(num_seeds)]

    def trainers():
        return [EnsembleTrainer(ProbabilisticEnsemble(OBS_DIM, ACT_DIM, model_cfg).to(device), model_cfg)
                for _ in range(num_seeds)]

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - t0)
        return best * 1e3 / epochs

    separate = trainers()
    stacked = StackedFit(trainers())
    return {"seeds": num_seeds, "transitions": size,
            "separate_ms_per_epoch": timed(lambda: [t.fit(*d) for t, d in zip(separate, data)]),
            "stacked_ms_per_epoch": timed(lambda: stacked.fit(data))}


def loop_ms_per_step(num_seeds: int, device: str, warmup: int, steps: int, root: Path, graphed: bool = False) -> dict:
    cfg = make_config("Hopper-v5", {"total_steps": warmup + steps, "device": device, "eval_episodes": 1,
                                    "mbpo.init_random_steps": warmup, "mbpo.epoch_length": warmup,
                                    "sac.cuda_graph": graphed, "model.cuda_graph": graphed})
    out = root / f"seeds{num_seeds}"
    if num_seeds == 1:
        train(cfg, str(out), progress=False)
        runs = [RunDirectory(out)]
    else:
        train_group(cfg, list(range(num_seeds)), str(out), progress=False)
        runs = [RunDirectory(out / f"seed{s}") for s in range(num_seeds)]
    records = runs[0].read_metrics()
    # records at the warm-up's end and at the end: the learning steps' wall-clock between them
    wall = records[-1]["perf/wall_seconds"] - records[0]["perf/wall_seconds"]
    learned = records[-1]["env_steps"] - records[0]["env_steps"]
    last = records[-1]
    return {"seeds": num_seeds, "learning_steps": learned, "wall_seconds": wall,
            "ms_per_env_step_group": 1e3 * wall / learned,
            "ms_per_env_step_per_seed": 1e3 * wall / learned / num_seeds,
            "phase_seconds_seed0": {k[5:-8]: last[k] for k in last if k.startswith("perf/") and k.endswith("_seconds")
                                    and k not in ("perf/epoch_seconds", "perf/wall_seconds")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--updates", type=int, default=100, help="updates per timing round")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=250, help="learning steps timed")
    parser.add_argument("--fit-size", type=int, default=10000, help="transitions per seed in the fit timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--graphed", action="store_true",
                        help="sac.cuda_graph and model.cuda_graph on (docs/architecture.md#cuda-graphs)")
    parser.add_argument("--out", default="benchmarks/results/seed_groups_cpu.json")
    args = parser.parse_args()
    if args.threads:
        set_up_process(args.threads)
    device = torch.device(args.device)
    result = {
        "command": "benchmarks/seed_groups.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "skip_loop", "graphed") and v is not None)
            + (" --graphed" if args.graphed else "") + (" --skip-loop" if args.skip_loop else ""),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "torch": torch.__version__,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "sac_update": [], "model_fit": [], "loop": [],
    }
    for n in args.seeds:
        ms = update_ms(n, device, args.updates, args.graphed)
        result["sac_update"].append({"seeds": n, "ms_per_update": ms, "ms_per_seed": ms / n})
        write_results(args.out, result)
        print(f"SAC update, {n} seed(s): {ms:.2f} ms ({ms / n:.2f} ms per seed)", flush=True)
    for n in args.seeds:
        row = fit_epoch_ms(n, device, args.fit_size, graphed=args.graphed)
        result["model_fit"].append(row)
        write_results(args.out, result)
        print(f"model fit epoch, {n} seed(s) x {args.fit_size}: stacked {row['stacked_ms_per_epoch']:.0f} ms, "
              f"separate {row['separate_ms_per_epoch']:.0f} ms", flush=True)
    if not args.skip_loop:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.seeds:
                row = loop_ms_per_step(n, args.device, args.warmup, args.steps, Path(tmp), args.graphed)
                result["loop"].append(row)
                write_results(args.out, result)
                print(f"whole loop, {n} seed(s): {row['ms_per_env_step_group']:.0f} ms per env step of the group, "
                      f"{row['ms_per_env_step_per_seed']:.0f} ms per seed-step", flush=True)
    write_results(args.out, result)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
