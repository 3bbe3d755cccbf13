"""Whole-loop tests: determinism, resume equals uninterrupted, Ctrl-C, and learning."""
import signal
import subprocess
import sys
import time

import pytest

from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.driver import TrainHook
from mbpo_ray.train import train
from helpers import assert_states_equal, assert_wandb_history_is_the_metrics, comparable
from mbpo_ray.wandb_log import existing_run_id


def final_state(run: RunDirectory):
    return run.load_checkpoint()["algorithm"]["runtime"]


def test_rollout_length_grows_and_model_buffer_is_reallocated(tiny_config, tmp_path):
    cfg = tiny_config()
    train(cfg, str(tmp_path / "run"), progress=False)
    records = RunDirectory(tmp_path / "run").read_metrics()
    assert [r["env_steps"] for r in records] == [200, 400, 600]
    ks = [r["rollout/k"] for r in records if "rollout/k" in r]
    # schedule [0, 2, 1, 3], epochs counted after the 200 warm-up steps: k = 1, then 2
    assert ks == [1, 2]
    # capacity = retain 1 x (200 / 100) x 1000 x k
    assert records[-1]["rollout/model_buffer_size"] <= 2 * 1000 * 2
    assert records[-1]["rollout/model_buffer_size"] > 2 * 1000  # grew past the k=1 capacity
    for key in ("train/q_loss", "model/holdout_mse", "rollout/transitions", "eval/return_mean", "perf/sps"):
        assert key in records[-1]


def test_same_seed_same_metrics(tiny_config, tmp_path):
    runs = []
    for name in ("a", "b"):
        train(tiny_config(), str(tmp_path / name), progress=False)
        runs.append(RunDirectory(tmp_path / name))
    first, second = (comparable(r.read_metrics()) for r in runs)
    assert len(first) == 3 and first == second
    assert_states_equal(final_state(runs[0]), final_state(runs[1]))
    # and a different seed gives a different run (the check above can fail)
    train(tiny_config(seed=4), str(tmp_path / "c"), progress=False)
    assert comparable(RunDirectory(tmp_path / "c").read_metrics()) != first


def test_ctrl_c_saves_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mbpo_ray", "train", "--env", "InvertedPendulum-v5", "--steps", "100000",
           "--seed", "0", "--out", str(out), "--no-progress", "--device", "cpu",
           "--set", "mbpo.epoch_length=100", "--set", "mbpo.init_random_steps=100",
           "--set", "mbpo.model_train_freq=100", "--set", "mbpo.rollout_batch_size=500",
           "--set", "mbpo.updates_per_step=1", "--set", "model.hidden_width=16",
           "--set", "model.max_fit_epochs=2", "--set", "sac.hidden_width=16", "--set", "eval_episodes=1",
           "--wandb", "--wandb-mode", "offline"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    assert metrics.exists(), proc.stderr.read() if proc.poll() is not None else "no metrics"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run = RunDirectory(out)
    stopped_at = run.load_checkpoint()["env_steps"]
    assert 300 <= stopped_at < 100000
    assert run.curve_path.exists()
    # the W&B run stopped by Ctrl-C holds every epoch, the curve, and is finished
    run_id = existing_run_id(out)
    assert_wandb_history_is_the_metrics(out, run_id)
    # resume with a smaller total that is already past... no: extend to a few more epochs
    done = subprocess.run([sys.executable, "-m", "mbpo_ray", "train", "--resume", str(out),
                           "--steps", str(stopped_at + 150), "--no-progress", "--wandb", "--wandb-mode", "offline"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert run.load_checkpoint()["env_steps"] == stopped_at + 150
    steps = [r["env_steps"] for r in run.read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == stopped_at + 150
    assert len(assert_wandb_history_is_the_metrics(out, run_id)) == 2  # the same W&B run, continued


@pytest.mark.slow
def test_mbpo_learns_inverted_pendulum(tmp_path):
    """MBPO with the paper's InvertedPendulum preset, seed 0, 5,000 env steps.

    Threshold 900: a random or untrained policy keeps the pole up for ~5-10 steps (eval return
    ~6 at step 0 here); the maximum is 1000 (the 1000-step time limit). The paper reaches 1000
    well within 15k steps, and mbrl-lib's MBPO reached 1000 at ~4,250 steps on this machine.
    benchmarks/results/learning/InvertedPendulum-v5.json: seeds 0, 1, 2 of this same config
    first reached >= 900 at 2,500, 2,750 and 2,250 steps, so 5,000 leaves a margin of ~2x.
    The run stops at the first evaluation >= 900 (about half the budget), so the test costs
    what reaching the threshold costs; a run that never reaches it trains all 5,000 steps and
    fails.
    """
    class Reached(Exception):
        pass

    class StopWhenReached(TrainHook):
        def epoch(self, record, checkpoint):
            if record["eval/return_mean"] >= 900:
                raise Reached(record["env_steps"])

    cfg = make_config("InvertedPendulum-v5", {"total_steps": 5000, "seed": 0, "device": "cpu"})
    with pytest.raises(Reached):
        train(cfg, str(tmp_path / "run"), progress=False, hooks=[StopWhenReached()])
    evals = [r["eval/return_mean"] for r in RunDirectory(tmp_path / "run").read_metrics()]
    assert evals[0] < 100  # untrained: far from balanced
    assert evals[-1] >= 900 and max(evals[:-1], default=0) < 900, evals
