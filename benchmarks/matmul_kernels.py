"""oneDNN's float32 kernel against MKL's for the stacked networks' matmuls (mbpo_ray.matmul), per
intra-op thread count: the SAC update and one fit step of the Hopper preset's ensemble, each
kernel choice in its own copy of the learner, in alternating rounds in one process; and each
product of those two, one by one.

    .venv/bin/python benchmarks/matmul_kernels.py [--threads 1 2] [--rounds 8] \
        --out benchmarks/results/matmul_kernels.json

Kernel choices (``mbpo_ray.matmul``'s switches, set between rounds): ``mkl``, torch's kernel for
every product (``ONEDNN`` off); ``onednn_every_product``, oneDNN for every product at least 4
wide (the rule before the thin products went back to MKL); ``rule``, the module's own choice
(``MIN_SIDE``, ``MIN_OUTPUT``, ``MANY_ROWS``). SAC update: Hopper-v5 sizes (obs 11, action 3, 2x256
networks, batch 256), 100 updates per round. Fit step: 7 members of 4 x 200 SiLU units, 14
inputs, 24 outputs, batch 256 per member, squared-error loss, backward and Adam, 20 steps per
round. Per choice: every round's ms per update (step), the best and the median. ``products``: each
product shape (members, rows, reduced, output) through ``mbpo_ray.matmul.baddbmm`` with a bias,
oneDNN against MKL, microseconds per call, best of the rounds.
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

KERNELS = {"mkl": {"ONEDNN": False},
           "onednn_every_product": {"ONEDNN": True, "MIN_SIDE": 4, "MIN_OUTPUT": 4, "MANY_ROWS": 0},
           "rule": {}}
RULE = {name: getattr(matmul, name) for name in ("ONEDNN", "MIN_SIDE", "MIN_OUTPUT", "MANY_ROWS")}
# (members, rows, reduced, output): the SAC update's and the Hopper ensemble fit's products
PRODUCTS = [(2, 512, 256, 256), (2, 512, 14, 256), (2, 256, 14, 256), (1, 512, 11, 256), (2, 14, 256, 256),
            (1, 11, 256, 256), (1, 512, 256, 6), (1, 6, 256, 256), (1, 256, 6, 256), (7, 256, 200, 200),
            (7, 256, 14, 200), (7, 2000, 14, 200), (7, 256, 200, 24), (7, 256, 24, 200), (7, 200, 256, 24),
            (7, 14, 256, 200), (7, 2000, 200, 24)]


def use(kernel: str) -> None:
    """Set mbpo_ray.matmul's switches to a kernel choice (KERNELS)."""
    for name, value in {**RULE, **KERNELS[kernel]}.items():
        setattr(matmul, name, value)


def products(rounds: int) -> dict:
    """Each of PRODUCTS on oneDNN (every product) and on MKL, alternating: us per call."""
    out = {}
    for members, rows, inner, width in PRODUCTS:
        a, b, bias = torch.randn(members, rows, inner), torch.randn(members, inner, width), torch.randn(members, 1, width)
        best = {}
        for _ in range(rounds):
            for kernel in ("onednn_every_product", "mkl"):
                use(kernel)
                matmul.baddbmm(bias, a, b)
                t0 = time.perf_counter()
                for _ in range(50):
                    matmul.baddbmm(bias, a, b)
                best[kernel] = min(best.get(kernel, float("inf")), (time.perf_counter() - t0) / 50 * 1e6)
        use("rule")
        out[f"{members}x{rows}x{inner}x{width}"] = {
            "onednn_us": best["onednn_every_product"], "mkl_us": best["mkl"],
            "rule_takes": "onednn" if matmul.uses_onednn(a, b) else "torch"}
    return out


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
                    for kernel in KERNELS:  # warm-up
                        use(kernel)
                        run(kernel)
                    for _ in range(args.rounds):
                        for kernel in KERNELS:
                            use(kernel)
                            rounds[kernel].append(run(kernel))
                    per[name] = {kernel: {"best": min(r), "median": statistics.median(r), "rounds": r}
                                 for kernel, r in rounds.items()}
                per["products"] = products(args.rounds)
            finally:
                use("rule")
            result["threads"][str(threads)] = per
            write_results(args.out, result)
            for name, kernels in per.items():
                if name == "products":
                    for shape, v in kernels.items():
                        print(f"{threads} thread(s) {shape}: onednn {v['onednn_us']:.1f} us, mkl {v['mkl_us']:.1f} us,"
                              f" rule: {v['rule_takes']}", flush=True)
                    continue
                print(f"{threads} thread(s) {name}: " + "  ".join(
                    f"{k} best {v['best']:.2f} median {v['median']:.2f}" for k, v in kernels.items()), flush=True)
    finally:
        set_up_process(args.threads[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
