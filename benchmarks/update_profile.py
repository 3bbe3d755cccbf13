"""Where the time of the SAC update (or of one ensemble fit epoch) goes on this machine: its
operations, counted and timed one by one (torch.profiler's self CPU time), grouped into the
matmuls (with each shape's FLOP rate), Adam, the target critics' average and everything else;
beside its own unprofiled time and its matmul floor (as benchmarks/precision.py defines it: the
matmul FLOPs at the best kernel rate that script measures, here in the same process).

    .venv/bin/python benchmarks/update_profile.py [--threads 2] [--precision float32] \
        [--target sac_update|fit_epoch] --out benchmarks/results/update_profile_cpu.json

``sac_update``: the learner's update (``SAC.update``: mbpo_ray.agents.sac_update written out, the
fused Adam, the target lerp) at the Hopper preset's sizes (obs 11, action 3, 2x256 policy and twin
Q, batch 256), on batches drawn from a fixed random table as precision.py draws them.
``fit_epoch``: one epoch of the Hopper preset's ensemble fit on 10,000 transitions, as
benchmarks/hot_paths.py times it. The profiler adds its own cost to every operation, so the
grouped times add up to more than the unprofiled time; their shares are what the file is for.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.agents.sac import SAC  # noqa: E402
from mbpo_ray.config import SACConfig, make_config  # noqa: E402
from mbpo_ray.process_setup import set_up as set_up_process  # noqa: E402
from mbpo_ray.models.ensemble import ProbabilisticEnsemble  # noqa: E402
from mbpo_ray.models.trainer import EnsembleTrainer  # noqa: E402
from mbpo_ray.precision import autocast  # noqa: E402
from machine import machine_stamp, write_results  # noqa: E402  (benchmarks/machine.py)
from precision import best_seconds, matmul_rates  # noqa: E402  (benchmarks/precision.py)

MATMULS = {"aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::matmul",
           "mkldnn::_linear_pointwise"}  # the last: oneDNN's float32 kernel (mbpo_ray.matmul)
ADAM = {"aten::_fused_adam_", "Optimizer.step#Adam.step"}
LERP = {"aten::lerp_", "aten::_foreach_lerp_"}
SAMPLING = {"aten::index", "aten::randint", "aten::randn", "aten::normal_", "aten::random_"}


def sac_updates(device: torch.device, precision: str):
    """(run(n): n SAC updates, updates per timed round, updates profiled): the learner's update at the Hopper preset's
    sizes on batches of a fixed random table, as precision.py draws them."""
    torch.manual_seed(0)
    n, obs_dim, act_dim = 10_000, 11, 3
    data = (torch.randn(n, obs_dim), torch.rand(n, act_dim) * 2 - 1, torch.randn(n), torch.randn(n, obs_dim),
            torch.zeros(n))
    agent = SAC(obs_dim, act_dim, SACConfig(), device)
    batches = [tuple(t[idx] for t in data) for idx in torch.randint(n, (100, 256))]

    def run(count: int) -> None:
        with autocast(device, precision):
            for i in range(count):
                agent.update(*batches[i % len(batches)])
    return run, 100, 20


def fit_epochs(device: torch.device, precision: str):
    """(run(n): n fit epochs, 1, 2): one epoch of the Hopper preset's ensemble fit (7 members of 4 x 200,
    batch 256, its holdout check included) on 10,000 synthetic transitions, as
    benchmarks/hot_paths.py times it."""
    cfg = make_config("Hopper-v5", {"device": str(device), "model.max_fit_epochs": 1,
                                    "precision": precision}).model
    torch.manual_seed(0)
    trainer = EnsembleTrainer(ProbabilisticEnsemble(11, 3, cfg).to(device), cfg)
    inputs, targets = torch.randn(10_000, 14), torch.randn(10_000, 12)

    def run(count: int) -> None:
        with autocast(device, precision):
            for _ in range(count):
                trainer.fit(inputs, targets)
    return run, 1, 2


def _flops(name: str, shapes: list) -> int:
    """Multiply-add FLOPs of one matmul call from its input shapes (as the profiler records them)."""
    if name == "aten::baddbmm":
        (b, m, k), (_, _, n) = shapes[1], shapes[2]
        return 2 * b * m * k * n
    if name == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * b * m * k * n
    if name == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name == "mkldnn::_linear_pointwise":  # input [M, K], weight [N, K]
        (m, k), (n, _) = shapes[0], shapes[1]
        return 2 * m * k * n
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    parser.add_argument("--target", choices=("sac_update", "fit_epoch"), default="sac_update",
                        help="what to profile: one SAC update (default) or one ensemble fit epoch")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds of 100 updates (default 7)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "update_profile_cpu.json"))
    args = parser.parse_args(argv)
    set_up_process(args.threads)
    device = torch.device("cpu")

    rates = matmul_rates(args.rounds)[args.precision]
    mm_rate = max(rates.values())  # GFLOP/s: the best kernel's, as precision.py's floor

    work, per_round, profiled = (sac_updates if args.target == "sac_update" else fit_epochs)(device, args.precision)
    update_ms = best_seconds(lambda: work(per_round), args.rounds, 1) * 1e3 / per_round
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        work(profiled)
    groups = defaultdict(lambda: {"ms": 0.0, "calls": 0})
    shapes = defaultdict(lambda: {"ms": 0.0, "calls": 0, "flops": 0})
    ops, total_ms, matmul_flops = 0, 0.0, 0
    for event in prof.key_averages(group_by_input_shape=True):
        if event.self_cpu_time_total <= 0:
            continue
        ms = event.self_cpu_time_total / 1e3 / profiled
        calls = event.count / profiled
        name = event.key
        group = ("matmul" if name in MATMULS else "adam" if name in ADAM else "target_lerp" if name in LERP
                 else "batch_and_noise_draws" if name in SAMPLING else "other")
        groups[group]["ms"] += ms
        groups[group]["calls"] += calls
        if group == "other":
            groups[f"other:{name}"]["ms"] += ms
            groups[f"other:{name}"]["calls"] += calls
        if group == "matmul":
            key = f"{name} {event.input_shapes}"
            flops = _flops(name, event.input_shapes) * calls
            shapes[key]["ms"] += ms
            shapes[key]["calls"] += calls
            shapes[key]["flops"] += flops
            matmul_flops += flops
        if name.startswith("aten::"):
            ops += calls
        total_ms += ms
    floor_ms = matmul_flops / (mm_rate * 1e9) * 1e3
    for value in shapes.values():
        value["gflops"] = value["flops"] / (value["ms"] / 1e3) / 1e9 if value["ms"] else None
    top_other = sorted((k for k in groups if k.startswith("other:")), key=lambda k: -groups[k]["ms"])
    result = {
        "command": "python benchmarks/update_profile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        **machine_stamp(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "target": args.target, "precision": args.precision, "matmul_gflops": rates,
        "ms_unprofiled": update_ms, "matmul_flops": matmul_flops,
        "matmul_floor_ms": floor_ms, "over_floor": update_ms / floor_ms,
        "profiled": {"aten_ops": ops, "self_ms": total_ms,
                     "groups": {k: groups[k] for k in ("matmul", "adam", "target_lerp", "batch_and_noise_draws", "other")},
                     "other_top": {k[len("other:"):]: groups[k] for k in top_other[:15]},
                     "matmul_shapes": dict(sorted(shapes.items(), key=lambda kv: -kv[1]["ms"]))},
    }
    write_results(args.out, result)
    g = result["profiled"]["groups"]
    print(f"{args.target} {update_ms:.2f} ms unprofiled, floor {floor_ms:.2f} ms (x{update_ms / floor_ms:.2f}); "
          f"profiled {total_ms:.2f} ms in {ops:.0f} aten ops: " +
          ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in g.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
