"""The command line as a user meets it: refusals before torch is imported, one-line errors,
resume past the budget, and progress output written to a file."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

import mbpo_ray.train
from mbpo_ray.cli import main
from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.driver import Progress

TINY = ["--env", "InvertedPendulum-v5", "--steps", "600", "--seed", "3", "--device", "cpu",
        "--set", "eval_episodes=2", "--set", "mbpo.epoch_length=200", "--set", "mbpo.init_random_steps=200",
        "--set", "mbpo.model_train_freq=100", "--set", "mbpo.rollout_batch_size=1000",
        "--set", "mbpo.updates_per_step=2", "--set", "mbpo.rollout_schedule=[0,2,1,3]",
        "--set", "model.hidden_width=32", "--set", "model.max_fit_epochs=5",
        "--set", "sac.hidden_width=32", "--set", "sac.batch_size=64", "--set", "torch_threads=1"]


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(mbpo_ray.train, "train", fail)


def test_bad_set_is_refused_before_torch_is_imported(tmp_path):
    code = f"""
import sys
from mbpo_ray.cli import main
code = main(["train", "--env", "Hopper-v5", "--out", {str(tmp_path / "run")!r}, "--set", "sac.discont=0.9"])
print(code, sorted(m for m in ("torch", "gymnasium", "numpy") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "[]"], out.stdout
    assert out.stderr.startswith("mbpo-ray: error: unknown config field 'sac.discont'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", ["1180591620717411303424", str(2**32), "-1"])
def test_seed_out_of_range_is_a_one_line_error(tmp_path, capsys, no_training, seed):
    assert main(["train", "--env", "Hopper-v5", "--out", str(tmp_path / "run"), "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mbpo-ray: error: seed={seed} is not allowed: a non-negative integer below 2**32")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _finished_run(tmp_path, env_steps):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5", {"total_steps": env_steps}))
    run.save_checkpoint({"env_steps": env_steps})
    return run


@pytest.mark.parametrize("steps, words", [(["--steps", "500"], "(past --steps 500)"),
                                          (["--steps", "600"], "(at --steps 600)"),
                                          ([], "(at total_steps 600)")])
def test_resume_past_the_budget_says_so_and_changes_nothing(tmp_path, capsys, no_training, steps, words):
    run = _finished_run(tmp_path, 600)
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    assert main(["train", "--resume", str(run.path), *steps]) == 0
    err = capsys.readouterr().err
    assert err == f"mbpo-ray: the run in {run.path} is already at 600 env steps {words}; nothing to do\n"
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before


def test_progress_to_a_file_is_one_line_per_epoch(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "mbpo_ray", "train", *TINY, "--out", str(tmp_path / "run")],
                              stderr=stderr, timeout=600)
    lines = log.read_text().splitlines()
    assert done.returncode == 0, lines
    epochs = [line for line in lines if " env steps, eval return " in line]
    assert [line.split(": ")[1].split(" ")[0] for line in epochs] == ["200/600", "400/600", "600/600"]
    assert all(", sps " in line for line in epochs)
    assert len(lines) == len(epochs) + 1 and lines[-1].startswith("finished at 600 env steps"), lines


def test_progress_on_a_terminal_is_a_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = Progress("MBPO", 100, 0, Terminal())
    assert bar.bar is not None
    bar.close()
    assert Progress("MBPO", 100, 0, io.StringIO()).bar is None
