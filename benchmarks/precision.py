"""The matmul floor of the SAC update, and float32 against bf16, on this machine (docs/precision.md).

    .venv/bin/python benchmarks/precision.py [--threads 2] [--repeats 7] [--device cuda]

Measures, for float32 and for bfloat16 (bf16 under the autocast that ``precision: bf16`` uses):

* matmul throughput, GFLOP/s: a 256x256x256 matmul (torch's, and in float32 on a CPU also
  oneDNN's, the kernel mbpo_ray.matmul takes), and the dynamics ensemble's hidden layer as one
  batched matmul (7 members x 256 rows x 200 x 200, the Hopper preset's width);
* the SAC update (Hopper-v5 sizes: obs 11, action 3, 2x256 policy and twin Q, batch 256), ms,
  as the learner runs it (written out, mbpo_ray.agents.sac_update) and through autograd (the
  reference form of the tests, tests/sac_reference.py), in alternating rounds;
* its matmul floor: the update's matmul FLOPs (forward and backward, counted by
  ``torch.utils.flop_counter``) divided by the best of the rates above, i.e. the time the
  update would take if it were nothing but matmuls at the best rate measured at these sizes;
  ``update_over_floor`` is the measured update time over that floor.

Writes benchmarks/results/precision.json (``--out``) with the CPU model (the GPU's name with
``--device cuda``) and whether the device has bfloat16 matrix units (without them bf16 is
emulated and slower than float32; see mbpo_ray.precision).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.agents.sac import SAC  # noqa: E402
from mbpo_ray.config import SACConfig  # noqa: E402
from mbpo_ray.process_setup import set_up as set_up_process  # noqa: E402
from mbpo_ray import matmul  # noqa: E402
from mbpo_ray.precision import autocast, bf16_units  # noqa: E402
from machine import machine_stamp  # noqa: E402  (benchmarks/machine.py)

sys.path.insert(0, str(REPO / "tests"))
from sac_reference import autograd_gradients  # noqa: E402  (the tests' autograd form of SAC's losses)

PRECISIONS = ("float32", "bf16")
VARIANTS = ("written_out", "autograd")
DEVICE = torch.device("cpu")  # --device


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def best_seconds(fn, repeats: int, inner: int) -> float:
    """Best of ``repeats`` of the mean time of ``inner`` calls (after one warm-up call)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def matmul_rates(repeats: int) -> dict:
    out = {}
    for precision in PRECISIONS:
        dtype = torch.float32 if precision == "float32" else torch.bfloat16
        a, b = (torch.randn(256, 256, dtype=dtype, device=DEVICE) for _ in range(2))
        x, w, bias = (torch.randn(7, 256, 200, dtype=dtype, device=DEVICE),
                      torch.randn(7, 200, 200, dtype=dtype, device=DEVICE),
                      torch.randn(7, 1, 200, dtype=dtype, device=DEVICE))
        mm = best_seconds(lambda: torch.mm(a, b), repeats, 200)
        layer = best_seconds(lambda: torch.baddbmm(bias, x, w), repeats, 100)
        out[precision] = {"mm_256_gflops": 2 * 256 ** 3 / mm / 1e9,
                          "ensemble_layer_gflops": 2 * 7 * 256 * 200 * 200 / layer / 1e9}
        if precision == "float32" and matmul.uses_onednn(a.unsqueeze(0), b.unsqueeze(0)):
            # oneDNN's float32 kernel (mbpo_ray.matmul's): the floor is at the best rate any
            # kernel reaches on this machine
            one = best_seconds(lambda: matmul.bmm(a.unsqueeze(0), b.unsqueeze(0)), repeats, 200)
            out[precision]["mm_256_onednn_gflops"] = 2 * 256 ** 3 / one / 1e9
    return out


def sac_update(repeats: int, rates: dict) -> dict:
    """The SAC update as the learner runs it (``written_out``: mbpo_ray.agents.sac_update) and
    the same update through autograd (``autograd``: tests/sac_reference.py's losses, backward,
    the same Adam and target lerp), in alternating rounds of 100 updates so that load on the
    machine falls on both alike; each variant's best and median round."""
    torch.manual_seed(0)
    n, obs_dim, act_dim = 10_000, 11, 3
    data = tuple(t.to(DEVICE) for t in (torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n),
                                        torch.randn(n, obs_dim), torch.zeros(n)))
    out = {}
    for precision in PRECISIONS:
        agents = {}
        for variant in VARIANTS:
            torch.manual_seed(0)
            agents[variant] = SAC(obs_dim, act_dim, SACConfig(), DEVICE)

        def step(variant):
            agent = agents[variant]
            idx = torch.randint(n, (256,), device=DEVICE)
            with autocast(DEVICE, precision):
                if variant == "written_out":
                    agent.update(*(t[idx] for t in data))
                else:
                    autograd_gradients(agent, tuple(t[idx] for t in data), agent.draw_noise(256))
                    agent.optimizer.step()
                    with torch.no_grad():
                        torch._foreach_lerp_(agent._q_target_params, agent._q_params, agent.sac_cfg.tau)

        rounds = {variant: [] for variant in VARIANTS}
        for variant in VARIANTS:
            step(variant)
        for _ in range(repeats):
            for variant in VARIANTS:
                rounds[variant].append(best_seconds(lambda: step(variant), 1, 100))
        counter = FlopCounterMode(display=False)
        oned, matmul.ONEDNN = matmul.ONEDNN, False  # the counter sees aten's matmuls, not oneDNN's
        try:
            with counter:
                step("autograd")
        finally:
            matmul.ONEDNN = oned
        flops = counter.get_total_flops()
        floor = flops / (max(rates[precision].values()) * 1e9)
        out[precision] = {"matmul_flops": flops, "matmul_floor_ms": floor * 1e3}
        for variant in VARIANTS:
            best, median = min(rounds[variant]), statistics.median(rounds[variant])
            out[precision][variant] = {"update_ms_best": best * 1e3, "update_ms_median": median * 1e3,
                                       "update_over_floor": best / floor, "rounds_ms": [t * 1e3 for t in rounds[variant]]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=9, help="rounds per variant (default 9)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "precision.json"))
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    set_up_process(args.threads)
    rates = matmul_rates(args.repeats)
    result = {"command": "python benchmarks/precision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
              **machine_stamp(), "bf16_units": bf16_units(DEVICE), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "matmul": rates, "sac_update": sac_update(args.repeats, rates)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for precision in PRECISIONS:
        m, u = rates[precision], result["sac_update"][precision]
        updates = "  ".join(f"{variant} {u[variant]['update_ms_best']:.2f} ms (x{u[variant]['update_over_floor']:.2f})"
                            for variant in VARIANTS)
        print(f"{precision:8s} mm256 {m['mm_256_gflops']:6.1f} GFLOP/s  ensemble layer {m['ensemble_layer_gflops']:6.1f} "
              f"GFLOP/s  floor {u['matmul_floor_ms']:.2f} ms  SAC update: {updates}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
