"""Every analysis of `mbpo-ray analyze` on one run, and the cost of the live diagnostics
(docs/diagnostics.md).

    .venv/bin/python benchmarks/diagnostics.py                       # train Hopper-v5 (paper preset,
                                                                     # 30k steps, every epoch kept), then analyse
    .venv/bin/python benchmarks/diagnostics.py --run DIR             # analyse an existing run directory
    .venv/bin/python benchmarks/diagnostics.py --cost-only           # only the live metrics' cost

Without ``--run`` the script trains a new run into runs/diagnostics/ENV-seedS (``runs/`` is not
committed; the per-epoch copies of a 30k-step Hopper run take ~120 MB), with
``keep_checkpoints_every=1`` so that the exploitation analysis has its checkpoints, or resumes it
there if it stopped. The analyses' figures, numbers and report.html go to ``--out``
(default benchmarks/results/diagnostics/), with live_cost.json: the time the live metrics add
to one epoch of the paper's Hopper preset, against the time of that epoch's SAC updates alone
(20 x 1000 updates, a lower bound of the epoch's time, so the share is an upper bound).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mbpo_ray.cli import main as cli_main  # noqa: E402
from mbpo_ray.config import make_config  # noqa: E402
from mbpo_ray.run_dir import RunDirectory  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)




def best_seconds(fn, repeats: int, inner: int) -> float:
    """Best of ``repeats`` of the mean time of ``inner`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def live_cost(env_id: str, device: str, repeats: int = 5) -> dict:
    """Seconds per epoch that each live metric adds, with the env's paper preset sizes."""
    from mbpo_ray.agents.sac import SAC
    from mbpo_ray.data.buffers import ReplayBuffer
    from mbpo_ray.live_metrics import BEHAVIOR_CAPACITY, BehaviorLog, elite_mse
    from mbpo_ray.models.rollout import DISAGREEMENT_ROWS
    from mbpo_ray.envs import make_env
    from mbpo_ray.models import ProbabilisticEnsemble

    cfg = make_config(env_id, {"device": device})
    env = make_env(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    dev = torch.device(device)
    torch.manual_seed(0)
    agent = SAC(obs_dim, act_dim, cfg.sac, dev)
    model = ProbabilisticEnsemble(obs_dim, act_dim, cfg.model).to(dev)
    b = cfg.mbpo
    buffer = ReplayBuffer(obs_dim, act_dim, 10_000, dev)
    buffer.add(torch.randn(10_000, obs_dim), torch.rand(10_000, act_dim) * 2 - 1, torch.randn(10_000),
               torch.randn(10_000, obs_dim), torch.zeros(10_000))
    log = BehaviorLog(obs_dim, act_dim, device=dev)
    one = torch.randn(1, obs_dim, device=dev)
    new_rows = buffer.rows_in_order()[-b.model_train_freq:]
    starts = torch.randn(DISAGREEMENT_ROWS, obs_dim, device=dev)
    acts = torch.rand(DISAGREEMENT_ROWS, act_dim, device=dev) * 2 - 1
    fits = b.epoch_length // b.model_train_freq
    batches = b.epoch_length // (b.rollout_freq or b.model_train_freq)

    with torch.no_grad():
        gaussian = agent.policy.gaussian(one)

    def per_step():  # the action's forward pass gives the Gaussian (act_and_gaussian): only the log's row is extra
        log.add(one, *gaussian)

    def kl():
        for _ in range(BEHAVIOR_CAPACITY // 10):
            log.add_rows(torch.randn(10, log.width, device=dev))
        log.take_kl(agent.policy)

    batch = buffer.sample(cfg.sac.batch_size)
    costs = {
        "behavior_per_env_step": best_seconds(per_step, repeats, 200) * b.epoch_length,
        "new_data_mse_per_fit": best_seconds(lambda: elite_mse(model, new_rows, buffer.layout), repeats, 20) * fits,
        "start_disagreement_per_batch": best_seconds(lambda: float(model.disagreement(starts, acts)),
                                                     repeats, 20) * batches,
        "policy_kl_per_epoch": best_seconds(kl, repeats, 2),
    }
    sac_update = best_seconds(lambda: agent.update(*batch), repeats, 50)
    sac_epoch = sac_update * b.updates_per_step * b.epoch_length
    total = sum(costs.values())
    return {"env": env_id, "device": device, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
            "seconds_per_epoch": costs, "total_seconds_per_epoch": total,
            "sac_update_seconds": sac_update, "sac_updates_per_epoch": b.updates_per_step * b.epoch_length,
            "sac_seconds_per_epoch": sac_epoch, "share_of_sac_time": total / sac_epoch,
            "note": "the epoch also fits the model 4 times and runs the env and rollouts: its time is above "
                    "sac_seconds_per_epoch, so share_of_sac_time bounds the live metrics' share from above"}


def train_run(env_id: str, steps: int, seed: int, path: Path) -> None:
    from mbpo_ray.train import train

    cfg = make_config(env_id, {"total_steps": steps, "seed": seed, "keep_checkpoints_every": 1,
                               "torch_threads": 1})
    run = RunDirectory(path)
    if run.checkpoint_path.is_file():
        done = run.load_checkpoint()["env_steps"]
        if done >= steps:
            return
        saved = run.load_config()
        saved.total_steps = steps
        train(saved, str(path), resume=True)
    else:
        train(cfg, str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="analyse this run directory (default: train a new one)")
    parser.add_argument("--env", default="Hopper-v5", help="env of the new run (default Hopper-v5)")
    parser.add_argument("--steps", type=int, default=30_000, help="env steps of the new run (default 30000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "diagnostics"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--param", action="append", default=[], metavar="KIND.KEY=VALUE",
                        help="passed on to `mbpo-ray analyze report` (repeatable)")
    parser.add_argument("--cost-only", action="store_true", help="only measure the live metrics' cost")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cost = live_cost(args.env if not args.run else make_env_of(args.run), args.device)
    (out / "live_cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    print(f"live metrics: {cost['total_seconds_per_epoch'] * 1000:.1f} ms per epoch, "
          f"{cost['share_of_sac_time'] * 100:.3f} % of the epoch's SAC updates alone")
    if args.cost_only:
        return 0
    run = Path(args.run) if args.run else REPO / "runs" / "diagnostics" / f"{args.env}-seed{args.seed}"
    if not args.run:
        train_run(args.env, args.steps, args.seed, run)
    argv = ["analyze", "report", str(run), "--out", str(out), "--device", args.device]
    for p in args.param:
        argv += ["--param", p]
    t0 = time.perf_counter()
    status = cli_main(argv)
    print(f"analyses took {time.perf_counter() - t0:.0f} s")
    return status


def make_env_of(run_dir: str) -> str:
    """The env id of a run directory (its config.yaml)."""
    return RunDirectory(run_dir).load_config().env_id


if __name__ == "__main__":
    sys.exit(main())
