"""oneDNN's float32 kernel against MKL's for the stacked networks' matmuls (mbpo_ray.matmul), per
intra-op thread count: the SAC update and one fit step of the Hopper preset's ensemble, each
kernel in its own copy of the learner, in alternating rounds in one process.

    .venv/bin/python benchmarks/matmul_kernels.py [--threads 1 2] [--rounds 8] \
        --out benchmarks/results/matmul_kernels.json

The switch ``mbpo_ray.matmul.ONEDNN`` is turned on and off between rounds. SAC update: Hopper-v5 sizes (obs 11, action 3, 2x256 networks, batch 256), 100 updates
per round. Fit step: 7 members of 4 x 200 SiLU units, 14 inputs, 24 outputs, batch 256 per
member, squared-error loss, backward and Adam, 20 steps per round. Per variant: every round's
ms per update (step), the best and the median.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray import matmul  # noqa: E402
from mbpo_ray.agents.sac import SAC  # noqa: E402
from mbpo_ray.process_setup import set_up as set_up_process  # noqa: E402
from mbpo_ray.config import SACConfig  # noqa: E402
from mbpo_ray.nn import StackedMLP  # noqa: E402
from machine import machine_stamp, write_results  # noqa: E402  (benchmarks/machine.py)

KERNELS = {"mkl": False, "onednn": True}


def sac_workload():
    torch.manual_seed(0)
    n, obs_dim, act_dim = 10_000, 11, 3
    data = (torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.randn(n, obs_dim),
            torch.zeros(n))
    batches = [tuple(t[idx] for t in data) for idx in torch.randint(n, (100, 256))]
    agents = {}
    for kernel in KERNELS:
        torch.manual_seed(0)
        agents[kernel] = SAC(obs_dim, act_dim, SACConfig(), torch.device("cpu"))

    def run(kernel: str) -> float:
        t0 = time.perf_counter()
        for batch in batches:
            agents[kernel].update(*batch)
        return (time.perf_counter() - t0) / len(batches) * 1e3
    return run


def fit_workload():
    nets, optimizers = {}, {}
    for kernel in KERNELS:
        torch.manual_seed(0)
        nets[kernel] = StackedMLP(7, 14, [200] * 4, 24, "silu", "truncated_normal")
        optimizers[kernel] = torch.optim.Adam(nets[kernel].parameters(), 1e-3)
    x, y = torch.randn(7, 256, 14), torch.randn(7, 256, 24)

    def run(kernel: str) -> float:
        t0 = time.perf_counter()
        for _ in range(20):
            loss = ((nets[kernel](x) - y) ** 2).mean()
            optimizers[kernel].zero_grad()
            loss.backward()
            optimizers[kernel].step()
        return (time.perf_counter() - t0) / 20 * 1e3
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "matmul_kernels.json"))
    args = parser.parse_args(argv)
    if not matmul.ONEDNN:
        parser.error("this torch build has no oneDNN")
    result = {"command": "python benchmarks/matmul_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              **machine_stamp(), "torch": torch.__version__, "threads": {}}
    try:
        for threads in args.threads:
            set_up_process(threads)
            try:
                per = {}
                for name, make in (("sac_update_ms", sac_workload), ("fit_step_ms", fit_workload)):
                    run = make()
                    rounds = {kernel: [] for kernel in KERNELS}
                    for kernel, on in KERNELS.items():  # warm-up
                        matmul.ONEDNN = on
                        run(kernel)
                    for _ in range(args.rounds):
                        for kernel, on in KERNELS.items():
                            matmul.ONEDNN = on
                            rounds[kernel].append(run(kernel))
                    per[name] = {kernel: {"best": min(r), "median": statistics.median(r), "rounds": r}
                                 for kernel, r in rounds.items()}
            finally:
                matmul.ONEDNN = True
            result["threads"][str(threads)] = per
            write_results(args.out, result)
            for name, kernels in per.items():
                print(f"{threads} thread(s) {name}: " + "  ".join(
                    f"{k} best {v['best']:.2f} median {v['median']:.2f}" for k, v in kernels.items()), flush=True)
    finally:
        set_up_process(args.threads[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
