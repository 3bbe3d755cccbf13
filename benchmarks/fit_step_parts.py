"""Where one step of the ensemble fit spends its time, timed without a profiler (the profiler's own
cost swamps the fit's ~50,000 operations per epoch): the whole step (loss, backward, Adam), its
forward pass, forward and backward, and the step's matmuls alone, against its matmul floor.

    .venv/bin/python benchmarks/fit_step_parts.py [--threads 1 2] \
        --out benchmarks/results/fit_step_parts.json

The Hopper preset's ensemble (7 members of 4 x 200 SiLU units, 14 inputs, 24 outputs) on one
batch of 256 rows per member, float32. ``matmuls_forward``: the five layers' products
(mbpo_ray.matmul.baddbmm, as the network runs them); ``matmuls_backward``: the products autograd's
backward runs (each layer's weight gradient, and the gradient into its input for all but the
first), on the same kernel. The floor is the step's matmul FLOPs at the rate of oneDNN's
256x256x256 product measured in the same process (benchmarks/precision.py's floor). Best of 5
rounds, ms per call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.config import make_config  # noqa: E402
from mbpo_ray.matmul import baddbmm, bmm  # noqa: E402
from mbpo_ray.models.ensemble import ProbabilisticEnsemble  # noqa: E402
from mbpo_ray.models.trainer import EnsembleTrainer  # noqa: E402
from mbpo_ray.process_setup import set_up as set_up_process  # noqa: E402
from machine import machine_stamp, write_results  # noqa: E402  (benchmarks/machine.py)
from precision import best_seconds, matmul_rates  # noqa: E402  (benchmarks/precision.py)


def parts(threads: int) -> dict:
    set_up_process(threads)
    cfg = make_config("Hopper-v5", {"device": "cpu"}).model
    torch.manual_seed(0)
    trainer = EnsembleTrainer(ProbabilisticEnsemble(11, 3, cfg), cfg)
    net = trainer.model.net
    members, rows = cfg.num_members, cfg.batch_size
    inputs, targets = torch.randn(members, rows, 14), torch.randn(members, rows, 12)
    trainer.model.set_normalizer(inputs.flatten(0, 1))
    # each layer's input and output gradient, shaped as in the step
    acts = [torch.randn(members, rows, w.shape[1]) for w in net.weights]
    grads = [torch.randn(members, rows, w.shape[2]) for w in net.weights]

    def forward():
        with torch.no_grad():
            trainer.loss(inputs, targets)

    def forward_backward():
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.loss(inputs, targets).backward()

    def step():
        trainer._step(inputs, targets)

    def matmuls_forward():
        with torch.no_grad():
            for x, w, b in zip(acts, net.weights, net.biases):
                baddbmm(b.detach(), x, w.detach())

    def matmuls_backward():
        with torch.no_grad():
            for i, (x, w, g) in enumerate(zip(acts, net.weights, grads)):
                bmm(x.transpose(1, 2), g)
                if i > 0:
                    bmm(g, w.detach().transpose(1, 2))

    flops = 0
    for i, w in enumerate(net.weights):
        layer = 2 * members * rows * w.shape[1] * w.shape[2]
        flops += layer * (2 if i == 0 else 3)  # forward, weight gradient, input gradient
    rate = max(matmul_rates(5)["float32"].values())
    out = {"torch_threads": torch.get_num_threads(), "matmul_flops": flops, "floor_gflops": rate,
           "matmul_floor_ms": flops / (rate * 1e9) * 1e3}
    for name, fn in (("step", step), ("forward", forward), ("forward_backward", forward_backward),
                     ("matmuls_forward", matmuls_forward), ("matmuls_backward", matmuls_backward)):
        fn()
        out[f"{name}_ms"] = best_seconds(lambda: [fn() for _ in range(20)], 5, 1) * 1e3 / 20
    out["step_over_floor"] = out["step_ms"] / out["matmul_floor_ms"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fit_step_parts.json"))
    args = parser.parse_args(argv)
    result = {"command": "python benchmarks/fit_step_parts.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              **machine_stamp(), "torch": torch.__version__, "threads": {}}
    for threads in args.threads:
        result["threads"][str(threads)] = parts(threads)
        write_results(args.out, result)
        print(threads, {k: round(v, 2) if isinstance(v, float) else v for k, v in result["threads"][str(threads)].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
