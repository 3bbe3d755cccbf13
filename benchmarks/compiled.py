"""Eager against compiled (`sac.compile`, `model.compile`) and graphed (`sac.cuda_graph`,
`model.cuda_graph`) on this machine: the SAC update (Hopper sizes, batch 256) and one epoch of the
ensemble's fit (Hopper preset's model, 10k and 50k transitions), each mode measured twice in
alternation (eager, compiled, graphed, eager, ...) with benchmarks/hot_paths.py's timers, best of
``--repeats`` each. On a CPU "graphed" runs the same steps eagerly through static inputs (its
cost over eager is those copies); on CUDA it replays one captured graph per step.

    .venv/bin/python benchmarks/compiled.py --out benchmarks/results/compiled_cpu.json
    python3 benchmarks/compiled.py --device cuda --threads 4 --out "$OUT/compiled_cuda.json"
"""
from __future__ import annotations

import argparse
import json

import torch

from hot_paths import fit_epoch_ms, sac_update_ms  # benchmarks/hot_paths.py
from machine import machine_stamp, write_results  # benchmarks/machine.py
from mbpo_ray.process_setup import set_up as set_up_process

MODES = {"eager": {}, "compiled": {"compiled": True}, "graphed": {"graphed": True}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()
    set_up_process(args.threads)
    device = torch.device(args.device)
    result = {"command": "benchmarks/compiled.py " + " ".join(
                  f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"),
              **machine_stamp(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "torch_threads": args.threads}
    for mode in args.modes * 2:
        options = MODES[mode]
        for name, timer in (("sac_update_ms", sac_update_ms), ("fit_epoch_ms", fit_epoch_ms)):
            try:
                figure = timer(device, args.repeats, **options)
            except Exception as error:  # one failing mode leaves the others their figures
                figure = f"failed: {type(error).__name__}: {error}"
            result.setdefault(f"{name}_{mode}", []).append(figure)
            write_results(args.out, result)
        print(json.dumps({k: v[-1] for k, v in result.items() if isinstance(v, list)}), flush=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
