"""Hot-path timings of one source tree, for before/after comparisons of a change: the SAC
update, branched rollouts, one epoch of the ensemble's fit and the whole MBPO loop with the Hopper preset, on the CPU or a GPU (``--device``).

It uses only entry points that stay put across refactors (``mbpo_ray.algos.make_algorithm``,
``SAC``, ``ReplayBuffer``, the local runtime's ``generate_rollouts``), so the same script
times an older checkout: run it with PYTHONPATH pointing at that checkout.

    .venv/bin/python benchmarks/hot_paths.py --label after --out results/hot_paths_after.json
    PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/hot_paths.py --label before ...

Alternate the two on an otherwise idle machine; each figure is the best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mbpo_ray
from mbpo_ray.agents.sac import SAC
from mbpo_ray.algos import make_algorithm
from mbpo_ray.config import SACConfig, make_config
from mbpo_ray.process_setup import set_up as set_up_process
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from machine import cpu_model  # benchmarks/machine.py


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def sac_update_ms(device: torch.device, repeats: int, updates: int = 300, compiled: bool = False,
                  graphed: bool = False) -> float:
    """ms per SAC update at Hopper's sizes, eager, ``compiled`` (sac.compile) or ``graphed``
    (sac.cuda_graph; older source trees: neither)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs_dim, act_dim, n, batch = 11, 3, 10_000, 256
    options = {**({"compile": True} if compiled else {}), **({"cuda_graph": True} if graphed else {})}
    agent = SAC(obs_dim, act_dim, SACConfig(batch_size=batch, **options), device)
    buf = ReplayBuffer(obs_dim, act_dim, n, device)
    buf.add(rng.standard_normal((n, obs_dim)).astype(np.float32), rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
            rng.standard_normal(n).astype(np.float32), rng.standard_normal((n, obs_dim)).astype(np.float32),
            (rng.uniform(size=n) < 0.01).astype(np.float32))

    def run():
        for _ in range(updates):
            agent.update(*buf.sample(batch))
        sync(device)
    run()  # warm-up
    return 1000 * best(run, repeats) / updates


def hopper_algo(device: torch.device, total_steps: int, out: Path):
    cfg = make_config("Hopper-v5", {"seed": 0, "device": str(device), "eval_episodes": 1, "total_steps": total_steps,
                                    "model.max_fit_epochs": 20})
    torch.manual_seed(0)
    np.random.seed(0)
    return make_algorithm(cfg, device, out)


def rollouts_per_s(device: torch.device, repeats: int, start_states: int = 100_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        algo = hopper_algo(device, 20_000, Path(tmp))
        rt = algo.runtime
        for _ in range(5000):
            rt.env_step(True)
        rt.fit_model()
        out = {}
        for k in (1, 5):
            rt.generate_rollouts(1000, k, start_states * k)  # warm-up
            secs = best(lambda: (rt.generate_rollouts(start_states, k, start_states * k), sync(device)), repeats)
            out[f"k={k}"] = start_states * k / secs  # upper bound: terminated rollouts stop early
        return out


def fit_epoch_ms(device: torch.device, repeats: int, sizes=(10_000, 50_000), compiled: bool = False,
                 graphed: bool = False) -> dict:
    """One epoch of the ensemble's fit (the Hopper preset's model: 7 members of 4 x 200, batch
    256) on n synthetic Hopper-sized transitions, its holdout check included; eager,
    ``compiled`` (model.compile) or ``graphed`` (model.cuda_graph)."""
    cfg = make_config("Hopper-v5", {"device": str(device), "model.max_fit_epochs": 1,
                                    **({"model.compile": True} if compiled else {}),
                                    **({"model.cuda_graph": True} if graphed else {})}).model
    out = {}
    for n in sizes:
        torch.manual_seed(0)
        trainer = EnsembleTrainer(ProbabilisticEnsemble(11, 3, cfg).to(device), cfg)
        inputs, targets = torch.randn(n, 14, device=device), torch.randn(n, 12, device=device)
        trainer.fit(inputs, targets)  # warm-up
        out[f"n={n}"] = 1000 * best(lambda: (trainer.fit(inputs, targets), sync(device)), repeats)
    return out


def loop_ms_per_step(device: torch.device, learning_steps: int) -> float:
    """The whole loop, Hopper preset, the first ``learning_steps`` after the 5,000 random steps
    (first model fit capped at 20 epochs, as in bench_components)."""
    with tempfile.TemporaryDirectory() as tmp:
        algo = hopper_algo(device, 5000 + learning_steps + 1, Path(tmp))
        while algo.env_steps < 5000:
            algo.step()
        t0 = time.perf_counter()
        while algo.env_steps < 5000 + learning_steps:
            algo.step()
        sync(device)
        return 1000 * (time.perf_counter() - t0) / learning_steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compiled", action="store_true",
                        help="also time the compiled SAC update and fit epoch (sac.compile, model.compile; "
                             "source trees that have both)")
    args = parser.parse_args()
    set_up_process(args.threads)
    device = torch.device(args.device)
    source = Path(mbpo_ray.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = {"label": args.label, "source": str(source), "commit": commit, "cpu": cpu_model(), "gpu": card,
              "torch_threads": args.threads, "torch": torch.__version__,
              "device": str(device),
              "sac_update_ms": sac_update_ms(device, args.repeats),
              "rollout_transitions_per_s": rollouts_per_s(device, args.repeats),
              "fit_epoch_ms": fit_epoch_ms(device, args.repeats),
              "loop_ms_per_env_step": loop_ms_per_step(device, args.loop_steps)}
    if args.compiled:
        result["sac_update_ms_compiled"] = sac_update_ms(device, args.repeats, compiled=True)
        result["fit_epoch_ms_compiled"] = fit_epoch_ms(device, args.repeats, compiled=True)
    print(json.dumps(result, indent=2), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
