"""glibc malloc's default thresholds against the fixed ones a training process sets
(mbpo_ray.process_setup): the SAC update and one ensemble fit epoch, timed in fresh processes,
the two settings alternating, with the page faults each takes.

    .venv/bin/python benchmarks/malloc_thresholds.py [--threads 1 2] [--rounds 3] \
        --out benchmarks/results/malloc_thresholds.json

Each process runs both workloads of benchmarks/update_profile.py (the Hopper preset's sizes: the
learner's update on batches of 256, and one fit epoch on 10,000 transitions) and reports the best
of 7 rounds of 100 updates and of 3 epochs, and the minor page faults per update (per epoch)
while timing. ``default``: glibc as it starts (thresholds that follow the largest freed block);
``kept``: ``process_setup.set_up`` (the thresholds every training process gets). A process per
setting and round, so that neither inherits the other's heap.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = ("default", "kept")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(setting: str, threads: int) -> dict:
    """One process's figures (run with --child)."""
    import torch

    from mbpo_ray.process_setup import keep_freed_memory, set_up
    from precision import best_seconds  # benchmarks/precision.py
    from update_profile import fit_epochs, sac_updates  # benchmarks/update_profile.py

    if setting == "kept":
        set_up(threads)
        if not keep_freed_memory():
            raise SystemExit("the thresholds could not be set here (not glibc, or set in the environment)")
    else:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    update, per_round, _ = sac_updates(device, "float32")
    update(per_round)  # warm-up
    before = _faults()
    update_ms = best_seconds(lambda: update(per_round), 7, 1) * 1e3 / per_round
    update_faults = (_faults() - before) / (7 * per_round)
    fit, _, _ = fit_epochs(device, "float32")
    fit(1)
    before = _faults()
    fit_ms = best_seconds(lambda: fit(1), 3, 1) * 1e3
    fit_faults = (_faults() - before) / 3
    return {"update_ms": update_ms, "update_faults": update_faults, "fit_epoch_ms": fit_ms,
            "fit_epoch_faults": fit_faults}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting and thread count (default 3)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "malloc_thresholds.json"))
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.threads[0])))
        return 0

    from machine import machine_stamp, write_results  # benchmarks/machine.py
    import torch

    result = {"command": "python benchmarks/malloc_thresholds.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              **machine_stamp(), "torch": torch.__version__, "threads": {}}
    for threads in args.threads:
        rounds = {setting: [] for setting in SETTINGS}
        for _ in range(args.rounds):
            for setting in SETTINGS:
                out = subprocess.run([sys.executable, __file__, "--child", setting, "--threads", str(threads)],
                                     check=True, capture_output=True, text=True).stdout
                rounds[setting].append(json.loads(out.strip().splitlines()[-1]))
                print(threads, setting, rounds[setting][-1], flush=True)
        summary = {}
        for setting, runs in rounds.items():
            summary[setting] = {"rounds": runs, **{f"median_{key}": statistics.median(r[key] for r in runs)
                                                   for key in runs[0]}}
        result["threads"][str(threads)] = summary
        write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
