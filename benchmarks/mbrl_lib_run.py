"""One run of mbrl-lib 0.2.0's MBPO, for benchmarks/mbrl_lib_loop.py. Runs in mbrl-lib's own venv
(benchmarks/mbrl_lib_setup.sh), so it imports nothing of this project.

    DIR/venv/bin/python benchmarks/mbrl_lib_run.py --conf DIR/conf --preset mbpo_hopper \
        --learning-steps 2000 --workdir /tmp/peer_run [--seed 0] [--threads 2] [OVERRIDE ...]

mbrl-lib first collects ``algorithm.initial_exploration_steps`` (5,000 in its MBPO config) and
then counts ``overrides.num_steps`` learning steps, so --learning-steps 2000 is 7,000 env steps in
all. OVERRIDE: Hydra overrides of its config (e.g. overrides.sac_hidden_size=256). Prints one JSON
line: wall seconds of the training call and the evaluation returns it logged.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir

import mbrl.algorithms.mbpo
import mbrl.util.env


def make_box(low, high, shape):
    """The action space of mbrl-lib's SAC agent: its config names ``__main__.make_box`` (the setup
    script's change 2) and passes the env's bounds as lists."""
    del shape  # implied by the bounds
    return gym.spaces.Box(np.asarray(list(low), np.float32), np.asarray(list(high), np.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf", required=True, help="the config directory the setup script wrote")
    p.add_argument("--preset", default="mbpo_hopper", help="mbrl-lib's per-env override file")
    p.add_argument("--learning-steps", type=int, required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=os.path.abspath(args.conf), version_base="1.1"):
        cfg = compose(config_name="main", overrides=[
            "algorithm=mbpo", f"overrides={args.preset}", "device=cpu", f"seed={args.seed}",
            f"overrides.num_steps={args.learning_steps}", *args.overrides])
    os.makedirs(args.workdir, exist_ok=True)
    env, term_fn, _ = mbrl.util.env.EnvHandler.make_env(cfg)
    test_env, _, _ = mbrl.util.env.EnvHandler.make_env(cfg)
    start = time.perf_counter()
    mbrl.algorithms.mbpo.train(env, test_env, term_fn, cfg, silent=False, work_dir=args.workdir)
    wall = time.perf_counter() - start
    evals = []
    results = os.path.join(args.workdir, "results.csv")
    if os.path.exists(results):
        with open(results) as f:
            evals = [(int(float(r["env_step"])), float(r["episode_reward"])) for r in csv.DictReader(f)]
    print(json.dumps({"train_wall_s": wall, "evals": evals}))


if __name__ == "__main__":
    main()
