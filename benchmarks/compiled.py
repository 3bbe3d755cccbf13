"""Eager against compiled (`sac.compile`, `model.compile`) on this machine: the SAC update
(Hopper sizes, batch 256) and one epoch of the ensemble's fit (Hopper preset's model, 10k and
50k transitions), each measured twice in alternation (eager, compiled, eager, compiled) with
benchmarks/hot_paths.py's timers, best of ``--repeats`` each.

    .venv/bin/python benchmarks/compiled.py --out benchmarks/results/compiled_cpu.json
    python3 benchmarks/compiled.py --device cuda --threads 4 --out "$OUT/compiled_cuda.json"
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hot_paths import fit_epoch_ms, sac_update_ms  # benchmarks/hot_paths.py
from machine import cpu_model  # benchmarks/machine.py


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {"command": "benchmarks/compiled.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
              "cpu": cpu_model(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "torch_threads": args.threads}
    for compiled in (False, True, False, True):
        suffix = "_compiled" if compiled else "_eager"
        result.setdefault("sac_update_ms" + suffix, []).append(sac_update_ms(device, args.repeats, compiled=compiled))
        result.setdefault("fit_epoch_ms" + suffix, []).append(fit_epoch_ms(device, args.repeats, compiled=compiled))
        print(json.dumps({k: v[-1] for k, v in result.items() if isinstance(v, list)}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
