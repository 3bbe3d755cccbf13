"""Whole-loop speed against mbrl-lib 0.2.0's MBPO: the same env steps at the same hyperparameters,
each in its own process, the two alternating, on an otherwise idle machine.

    bash benchmarks/mbrl_lib_setup.sh /tmp/mbrl_lib            # once: mbrl-lib in its own venv
    .venv/bin/python benchmarks/mbrl_lib_loop.py --peer /tmp/mbrl_lib --learning-steps 2000 \
        --rounds 1 --out benchmarks/results/mbrl_lib_loop.json

Both runs: Hopper, 5,000 warm-up steps, then --learning-steps learning steps (a multiple of 1,000:
mbrl-lib runs whole epochs), SAC 2x256 with 20 updates per env step, a 7 x 4x200 ensemble refit
every 250 steps, 400 model rollouts per env step, one CPU device, --threads torch threads.
What differs is each project's own choice: mbrl-lib uses
Hopper-v4, acts with its untrained SAC policy during the warm-up, updates the target network
every 4th update, keeps the temperature fixed at 0.2, evaluates 1 episode per epoch and saves the
model and the replay buffer after every refit; ours uses Hopper-v5, a uniform-random warm-up, a
target update and a temperature step in every update, 5 evaluation episodes per epoch and one
checkpoint per epoch. So mbrl-lib's SAC update does a little less work than ours.

Measured: wall seconds of each process from start to exit (imports, env creation and the
warm-up included; the ratio of these is the figure quoted), its peak resident memory, the seconds
of mbrl-lib's training call (warm-up included: it collects it inside that call), and for ours the
learning steps per second after the warm-up and the seconds of each phase, from metrics.jsonl.
Run directories and logs stay under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_model, write_results  # noqa: E402

WARMUP = 5000  # both projects' Hopper presets (mbpo.init_random_steps; initial_exploration_steps)


def timed(cmd: list, log: Path, env: dict) -> dict:
    """Run ``cmd`` to its end; wall seconds, peak RSS (MiB) and its stdout's last line."""
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({code}); see {log}")
    lines = out.strip().splitlines()
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "last_line": lines[-1] if lines else ""}


def run_ours(args, work: Path, env: dict) -> dict:
    run = work / "ours"
    cmd = [sys.executable, "-m", "mbpo_ray", "train", "--env", "Hopper-v5", "--seed", str(args.seed),
           "--steps", str(WARMUP + args.learning_steps), "--out", str(run), "--no-progress",
           "--device", "cpu", "--set", f"torch_threads={args.threads}"]
    res = timed(cmd, work / "ours.log", env)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    learning = [r for r in records if r["env_steps"] > WARMUP]
    seconds = sum(r["perf/epoch_seconds"] for r in learning)
    res.update({
        "learning_steps_per_s": round(args.learning_steps / seconds, 3),
        "phases_s": {k: round(sum(r[f"perf/{k}_seconds"] for r in learning), 1)
                     for k in ("sac", "model", "rollout", "env", "eval")},
        "evals": [(r["env_steps"], round(r["eval/return_mean"], 1)) for r in records],
    })
    del res["last_line"]
    return res


def run_mbrl_lib(args, work: Path, env: dict) -> dict:
    run = work / "mbrl_lib"
    cmd = [str(Path(args.peer) / "venv" / "bin" / "python"), str(HERE / "mbrl_lib_run.py"),
           "--conf", str(Path(args.peer) / "conf"), "--preset", "mbpo_hopper", "--seed", str(args.seed),
           "--learning-steps", str(args.learning_steps), "--workdir", str(run), "--threads", str(args.threads),
           # our Hopper preset's SAC width and update count (its own preset: 512 and 40)
           "overrides.sac_hidden_size=256", "overrides.num_sac_updates_per_step=20",
           # Its real-data buffer holds overrides.num_steps transitions unless told otherwise (125k
           # in a full run): a short run would fit its model on the last --learning-steps
           # transitions only, while ours fits on all of them. Room for every step, as in ours.
           f"+algorithm.dataset_size={WARMUP + args.learning_steps}"]
    res = timed(cmd, work / "mbrl_lib.log", env)
    inner = json.loads(res.pop("last_line"))
    res["train_call_s"] = round(inner["train_wall_s"], 1)
    res["evals"] = [(step + 1 + WARMUP, round(ret, 1)) for step, ret in inner["evals"]]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer", required=True, help="the directory benchmarks/mbrl_lib_setup.sh installed into")
    p.add_argument("--learning-steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, alternating which goes first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "mbrl_lib_loop.json"))
    p.add_argument("--work", default=None, help="run directories and logs (default: a new temporary directory)")
    args = p.parse_args()
    if args.learning_steps <= 0 or args.learning_steps % 1000:
        p.error(f"--learning-steps must be a positive multiple of 1000 (mbrl-lib runs whole "
                f"1,000-step epochs), got {args.learning_steps}")
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if not (Path(args.peer) / "venv" / "bin" / "python").exists():
        p.error(f"--peer {args.peer}: no venv there; run bash benchmarks/mbrl_lib_setup.sh {args.peer}")

    args.work = args.work or tempfile.mkdtemp(prefix="mbrl_lib_loop_")
    print(f"run directories and logs: {args.work}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    result = {"machine": {"cpu": cpu_model(), "cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%d"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "env_steps": WARMUP + args.learning_steps, "threads": args.threads, "rounds": []}
    for i in range(args.rounds):
        order = ("ours", "mbrl_lib") if i % 2 == 0 else ("mbrl_lib", "ours")
        pair = {}
        for who in order:
            work = Path(args.work) / f"round{i}_{who}"
            work.mkdir(parents=True, exist_ok=False)
            pair[who] = (run_ours if who == "ours" else run_mbrl_lib)(args, work, env)
            print(who, json.dumps(pair[who]), flush=True)
        pair["wall_ratio"] = round(pair["mbrl_lib"]["wall_s"] / pair["ours"]["wall_s"], 3)
        result["rounds"].append(pair)
        write_results(args.out, result)
    ratios = [r["wall_ratio"] for r in result["rounds"]]
    result["wall_ratio_median"] = round(statistics.median(ratios), 3)
    write_results(args.out, result)
    print(f"mbrl-lib wall / ours: {ratios}")


if __name__ == "__main__":
    main()
