"""`mbpo-ray sweep` on a real local Ray and real Tune (one Ray instance for the module): a small
study end to end (valid run directories, W&B offline files, no API key in any file), a trial
whose worker is killed restarts from its checkpoint, the study driver SIGKILLed mid-way and
resumed, a Ray-runtime trial's actors inside its placement group, and a trial that could never
be placed refused at submission. Budgets are tiny (tests/conftest.py's tiny_config)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Optional

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # starts a Ray cluster: make test-fast leaves it out
tune = pytest.importorskip("ray.tune")

from mbpo_ray.cli import main  # noqa: E402
from mbpo_ray.config import to_dict  # noqa: E402
from mbpo_ray.analysis.report import find_run_dirs  # noqa: E402
from mbpo_ray.rehearsal.local_s3 import LocalS3  # noqa: E402
from mbpo_ray.run_dir import RunDirectory  # noqa: E402
from mbpo_ray.group_dir import GroupDirectory  # noqa: E402
from mbpo_ray.tune.study import StudyError, cells, load_study, trial_config  # noqa: E402
from mbpo_ray.tune.sweep import sweep  # noqa: E402
from mbpo_ray.wandb_log import stable_run_id  # noqa: E402
from helpers import assert_wandb_history_is_the_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "fake-wandb-key-0123456789abcdef0123456789abcdef"
BUCKET = "mbpo-sweeps"
CLUSTER_CPUS = 8

# tests/conftest.py's tiny_config as study overrides: every phase of MBPO within 400 steps
TINY = """
overrides:
  all:
    device: cpu
    eval_episodes: 2
    mbpo: {epoch_length: 200, init_random_steps: 200, model_train_freq: 100, rollout_batch_size: 1000,
           updates_per_step: 2, rollout_schedule: [0, 2, 1, 3]}
    model: {hidden_width: 32, max_fit_epochs: 5}
    sac: {hidden_width: 32, batch_size: 64}
"""


@pytest.fixture(scope="module")
def ray_cluster():
    # Trial workers inherit the environment Ray starts with: a fake W&B key, which the offline
    # runs below must neither use nor write anywhere. 8 logical CPUs: a Ray-runtime trial's
    # group (5) beside a local trial; they mostly wait on each other.
    # They also inherit a W&B service token of this process, as they would from a notebook that
    # used wandb before starting the sweep: here one of no live service, so a trial that used
    # it instead of starting its own (wandb_log.own_service) fails.
    # W&B's servers cannot be reached (a cluster without egress): WANDB_BASE_URL is a closed
    # port of this machine, so a trial that tries online must fall back to offline by itself.
    names = ("WANDB_API_KEY", "WANDB_SERVICE", "WANDB_BASE_URL", "WANDB_MODE")
    saved = tuple(os.environ.get(name) for name in names)
    os.environ["WANDB_API_KEY"] = FAKE_KEY
    os.environ["WANDB_SERVICE"] = f"3-{os.getpid()}-unix-/nonexistent/wandb-service.sock"
    os.environ["WANDB_BASE_URL"] = f"http://127.0.0.1:{closed_port()}"
    os.environ.pop("WANDB_MODE", None)
    # trial processes import tests/namespaced_envs.py, as a user's plugin package
    names += ("PYTHONPATH",)
    saved += (os.environ.get("PYTHONPATH"),)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    # a bucket on a local S3 server, which every trial process reaches through AWS_ENDPOINT_URL
    s3 = LocalS3(BUCKET)
    s3.start()
    names += tuple(s3.env)
    saved += tuple(os.environ.get(name) for name in s3.env)
    os.environ.update(s3.env)
    ray.init(address="local", num_cpus=CLUSTER_CPUS, object_store_memory=128 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False)
    try:
        yield types.SimpleNamespace(address=ray.get_runtime_context().gcs_address, s3=s3)
    finally:
        ray.shutdown()
        s3.stop()
        for name, value in zip(names, saved):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def closed_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_study(folder: Path, body: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body) + TINY)
    return path


def env_steps(run: RunDirectory):
    return [r["env_steps"] for r in run.read_metrics()]


class KillOnce(tune.Callback):
    """Kills the worker process of trial ``name`` (SIGKILL) once Tune has recorded its first
    checkpoint, remembering the metrics line written by then."""

    def __init__(self, name: str, runs: Path, metrics: str = "metrics.jsonl"):
        self.name, self.runs, self.metrics = name, runs, metrics
        self.killed_pid = None
        self.first_line = None
        self.recovered = 0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if str(trial) != self.name or self.killed_pid is not None:
            return
        self.first_line = (self.runs / self.name / self.metrics).read_text().splitlines()[0]
        self.killed_pid = trial.last_result["pid"]
        os.kill(self.killed_pid, signal.SIGKILL)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if str(trial) == self.name:
            self.recovered += 1


@pytest.fixture(scope="module")
def smoke(ray_cluster, tmp_path_factory):
    """2 algorithms x 2 seeds, 400 env steps each, W&B in auto mode with a key and no route to
    W&B (each trial tries online, waits 3 s, logs offline); one trial's worker killed."""
    root = tmp_path_factory.mktemp("smoke")
    path = write_study(root, """
        algorithms: [mbpo, sac]
        envs: [InvertedPendulum-v5]
        seeds: [0, 1]
        budget: {env_steps: 400}
        max_concurrent_trials: 2
        max_failures: 1
        wandb: {mode: auto, group: smoke-test, tags: [ci], init_timeout: 3}
        """, "smoke")
    folder = root / "study"
    killer = KillOnce("sac-InvertedPendulum-v5-seed1", folder / "runs")
    start = time.perf_counter()
    code = sweep(str(path), out=str(folder), callbacks=[killer], verbose=0)
    return {"code": code, "folder": folder, "study": load_study(path), "killer": killer,
            "seconds": time.perf_counter() - start}


def test_smoke_study_writes_a_valid_run_directory_per_trial(smoke):
    assert smoke["code"] == 0
    folder, study = smoke["folder"], smoke["study"]
    for name in ("study.yaml", "sweep.json", "trials.txt", "tune"):
        assert (folder / name).exists(), name
    expected = {c.name: c for c in cells(study)}
    assert sorted(p.name for p in (folder / "runs").iterdir()) == sorted(expected)
    for name, cell in expected.items():
        run = RunDirectory(folder / "runs" / name)
        # the trial's resolved config: the cell's overrides on the env and algorithm presets
        assert to_dict(run.load_config()) == to_dict(trial_config(cell.to_plain()))
        assert env_steps(run) == [200, 400]
        assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
        assert run.load_checkpoint()["env_steps"] == 400
        assert run.curve_path.is_file()
        if cell.algo == "mbpo":
            assert "model/holdout_mse" in run.read_metrics()[-1] and "rollout/k" in run.read_metrics()[-1]


def test_killed_trial_worker_restarts_from_its_checkpoint(smoke):
    killer = smoke["killer"]
    assert killer.killed_pid is not None and killer.recovered == 1
    run = RunDirectory(smoke["folder"] / "runs" / killer.name)
    lines = run.metrics_path.read_text().splitlines()
    # the epoch before the checkpoint is the line written before the kill, byte for byte
    # (a run from scratch would rewrite it with other perf/ timings); the next epoch is there once
    assert lines[0] == killer.first_line
    assert env_steps(run) == [200, 400]


def test_smoke_study_logs_every_trial_to_wandb_offline(smoke):
    folder = smoke["folder"]
    study_id = __import__("json").loads((folder / "sweep.json").read_text())["id"]
    for run_dir in (folder / "runs").iterdir():
        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        run_id = stable_run_id(study_id, run_dir.name)
        assert runs and all((r / f"run-{run_id}.wandb").is_file() for r in runs), runs
        # the killed trial's two processes logged to one W&B run
        assert len(runs) == (2 if run_dir.name == smoke["killer"].name else 1)
        data = b"".join((r / f"run-{run_id}.wandb").read_bytes() for r in runs)
        for text in (run_dir.name, "smoke-test", "eval/return_mean", "env_steps", "mbpo.updates_per_step", "curve"):
            assert text.encode() in data, (run_dir.name, text)


def test_no_file_of_the_study_holds_the_api_key(smoke):
    files = [p for p in smoke["folder"].rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 40  # run directories, W&B files, Tune's state and checkpoints
    holders = [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert holders == []
    # nor do Ray's session logs (every process of the session, trials included)
    logs = [p for p in Path(ray._private.worker._global_node.get_logs_dir_path()).rglob("*") if p.is_file()]
    assert len(logs) > 10
    assert [str(p) for p in logs if FAKE_KEY.encode() in p.read_bytes()] == []


def test_every_trial_fell_back_to_offline_and_no_online_folder_is_left(smoke):
    for run_dir in (smoke["folder"] / "runs").iterdir():
        folders = [p.name for p in (run_dir / "wandb").iterdir() if p.is_dir() and not p.is_symlink()]
        assert folders and all(name.startswith("offline-run-") for name in folders), folders


def test_a_trial_folder_resumes_with_mbpo_ray_train(smoke):
    run = smoke["folder"] / "runs" / "sac-InvertedPendulum-v5-seed0"
    assert main(["train", "--resume", str(run), "--steps", "600", "--no-progress"]) == 0
    assert env_steps(RunDirectory(run)) == [200, 400, 600]


def test_a_namespaced_env_id_trains_resumes_and_is_reported_verbatim(ray_cluster, tmp_path):
    from namespaced_envs import QUALIFIED_ID  # "namespaced_envs:mbpo_test/Pendulum-v0"

    path = write_study(tmp_path, f"""
        algorithms: [sac]
        envs: ['{QUALIFIED_ID}']
        seeds: [0]
        budget: {{env_steps: 400}}
        wandb: {{mode: offline}}
        """, "namespaced")
    folder = tmp_path / "study"
    assert sweep(str(path), out=str(folder), verbose=0) == 0
    (trial,) = list((folder / "runs").iterdir())
    assert "/" not in trial.name and ":" not in trial.name and "mbpo_test_Pendulum-v0" in trial.name
    run = RunDirectory(trial)
    assert run.load_config().env_id == QUALIFIED_ID and env_steps(run) == [200, 400]
    assert sweep(resume=str(folder), verbose=0) == 0  # every trial already finished
    assert env_steps(run) == [200, 400]
    assert main(["report", str(folder), "--out", str(tmp_path / "report"), "--reps", "200"]) == 0
    assert QUALIFIED_ID in (tmp_path / "report" / "report.md").read_text()


def test_a_bucket_holds_only_the_kept_checkpoints_and_the_run_directories(ray_cluster, tmp_path):
    s3 = ray_cluster.s3
    path = write_study(tmp_path, """
        algorithms: [sac]
        envs: [InvertedPendulum-v5]
        seeds: [0, 1]
        seeds_per_trial: 2
        budget: {env_steps: 800}
        wandb: {mode: offline}
        """, "bucket")
    assert sweep(str(path), out=f"s3://{BUCKET}/sweeps/b", verbose=0) == 0
    keys = s3.keys("sweeps/b/")
    trial = "sac-InvertedPendulum-v5-seeds0-1"
    # 4 epochs, a checkpoint each: Tune keeps the newest 2 (num_to_keep), one checkpoint.pt per
    # seed in each; no snapshot folder and no checkpoint.pt among the trial's artifacts (before the
    # fix: 4 .tune-checkpoint-* folders stayed, and the run directory's own checkpoint.pt)
    checkpoints = [k for k in keys if k.endswith("/checkpoint.pt")]
    kept = sorted({k.split("/")[4] for k in checkpoints})
    assert len(kept) == 2 and all(name.startswith("checkpoint_") for name in kept), checkpoints
    assert len(checkpoints) == 2 * 2
    assert not [k for k in keys if ".tune-checkpoint-" in k]
    # the run directories are there as artifacts, whole but for their checkpoints
    for seed in (0, 1):
        prefix = f"sweeps/b/tune/{trial}/seed{seed}/"
        assert {prefix + name for name in ("metrics.jsonl", "config.yaml", "curve.png")} <= set(keys)
        assert any(k.startswith(prefix + "wandb/offline-run-") and k.endswith(".wandb") for k in keys)
    local = tmp_path / "downloaded"
    s3.download("sweeps/b/", local)
    runs = find_run_dirs([local])
    assert sorted(p.name for p in runs) == ["seed0", "seed1"]
    assert [r["env_steps"] for r in RunDirectory(runs[0]).read_metrics()] == [200, 400, 600, 800]


def test_a_study_stopped_by_its_time_budget_exits_3_and_says_how_to_extend_it(ray_cluster, tmp_path):
    # one trial at a time: seed 0 runs into the budget, seed 1 would start after it. The budget
    # counts from the sweep's start: 40 s leave room for Tune and the first trial's process to
    # start on a loaded machine (12 s did not: no trial had started by then)
    path = write_study(tmp_path, """
        algorithms: [sac]
        envs: [InvertedPendulum-v5]
        seeds: [0, 1]
        budget: {env_steps: 100000, time_s: 40}
        max_concurrent_trials: 1
        wandb: {mode: offline}
        """, "timed")
    folder = tmp_path / "study"
    out = io.StringIO()
    # before: exit status 0, and the summary sent the user to --resume, which runs nothing
    assert sweep(str(path), out=str(folder), verbose=0, stream=out) == 3
    text = out.getvalue()
    assert "1 stopped before their budget" in text and "(the study's time budget or ASHA)" in text
    assert f"mbpo-ray train --resume {folder}/runs/<trial>" in text and "sweep --resume" not in text
    # a trial the budget kept from starting is said to be one, and left nothing behind
    assert "1 not started" in text and "sac-InvertedPendulum-v5-seed1: 0 env steps" in text
    assert not any((folder / "runs" / "sac-InvertedPendulum-v5-seed1").glob("*"))
    run = RunDirectory(folder / "runs" / "sac-InvertedPendulum-v5-seed0")
    steps = env_steps(run)
    assert steps and steps[-1] < 100000
    # the stopped run ended as Ctrl-C ends one: a checkpoint at its last epoch, its curve, and its
    # W&B run flushed and finished (before: the process ended with the stop, and W&B never got
    # the curve nor the summary)
    assert run.load_checkpoint()["env_steps"] == steps[-1] and run.curve_path.is_file()
    (wandb_run,) = sorted((run.path / "wandb").glob("offline-run-*"))
    data = b"".join(p.read_bytes() for p in wandb_run.glob("run-*.wandb"))
    assert b"completed" in data
    study_id = json.loads((folder / "sweep.json").read_text())["id"]
    assert_wandb_history_is_the_metrics(run.path, stable_run_id(study_id, run.path.name))  # and finished
    # the hint is true: the trial's folder continues as a run
    assert main(["train", "--resume", str(run.path), "--steps", str(steps[-1] + 200), "--no-progress"]) == 0
    assert env_steps(run)[-1] == steps[-1] + 200


@pytest.fixture(scope="module")
def packed(ray_cluster, tmp_path_factory):
    """sac with 3 seeds, 2 per trial: a seed group (seeds 0, 1) and a single run (seed 2), W&B
    offline; the group trial's worker killed once."""
    root = tmp_path_factory.mktemp("packed")
    path = write_study(root, """
        algorithms: [sac]
        envs: [InvertedPendulum-v5]
        seeds: [0, 1, 2]
        seeds_per_trial: 2
        budget: {env_steps: 400}
        max_concurrent_trials: 2
        max_failures: 1
        wandb: {mode: offline}
        """, "packed")
    folder = root / "study"
    killer = KillOnce("sac-InvertedPendulum-v5-seeds0-1", folder / "runs", metrics="seed0/metrics.jsonl")
    code = sweep(str(path), out=str(folder), callbacks=[killer], verbose=0)
    return {"code": code, "folder": folder, "study": load_study(path), "killer": killer}


def test_packed_seeds_train_as_a_group_in_one_trial(packed):
    assert packed["code"] == 0
    runs = packed["folder"] / "runs"
    by_name = {c.name: c for c in cells(packed["study"])}
    assert sorted(p.name for p in runs.iterdir()) == sorted(by_name) == ["sac-InvertedPendulum-v5-seed2",
                                                                         "sac-InvertedPendulum-v5-seeds0-1"]
    group = GroupDirectory(runs / "sac-InvertedPendulum-v5-seeds0-1")
    assert group.seeds() == [0, 1]
    seed_runs = {0: group.lane(0), 1: group.lane(1), 2: RunDirectory(runs / "sac-InvertedPendulum-v5-seed2")}
    for seed, run in seed_runs.items():
        cell = by_name["sac-InvertedPendulum-v5-seed2" if seed == 2 else "sac-InvertedPendulum-v5-seeds0-1"]
        assert to_dict(run.load_config()) == {**to_dict(trial_config(cell.to_plain())), "seed": seed}
        assert env_steps(run) == [200, 400] and run.load_checkpoint()["env_steps"] == 400
        assert run.curve_path.is_file()
    # every seed's run directory is a run to mbpo-ray report
    assert sorted(find_run_dirs([runs])) == sorted(r.path.resolve() for r in seed_runs.values())
    # the group trial's worker was killed after its first checkpoint and continued from it
    killer = packed["killer"]
    assert killer.killed_pid is not None and killer.recovered == 1
    assert group.lane(0).metrics_path.read_text().splitlines()[0] == killer.first_line


def test_a_packed_trial_reports_the_mean_of_its_seeds_to_tune(packed):
    result_file = packed["folder"] / "tune" / "sac-InvertedPendulum-v5-seeds0-1" / "result.json"
    last = __import__("json").loads(result_file.read_text().splitlines()[-1])
    group = GroupDirectory(packed["folder"] / "runs" / "sac-InvertedPendulum-v5-seeds0-1")
    returns = [group.lane(seed).read_metrics()[-1]["eval/return_mean"] for seed in (0, 1)]
    assert last["seeds"] == 2 and last["env_steps"] == 400
    assert [last["seed0/eval/return_mean"], last["seed1/eval/return_mean"]] == returns
    assert last["eval/return_mean"] == pytest.approx(sum(returns) / 2)


def test_each_packed_seed_has_its_own_wandb_run(packed):
    folder = packed["folder"]
    study_id = __import__("json").loads((folder / "sweep.json").read_text())["id"]
    name = "sac-InvertedPendulum-v5-seeds0-1"
    for seed in (0, 1):
        run_dir = GroupDirectory(folder / "runs" / name).lane(seed).path
        run_id = stable_run_id(study_id, f"{name}-seed{seed}")
        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(runs) == 2 and all((r / f"run-{run_id}.wandb").is_file() for r in runs), runs  # killed once
        data = b"".join((r / f"run-{run_id}.wandb").read_bytes() for r in runs)
        assert f"{name}-seed{seed}".encode() in data, seed
        # each seed's W&B run, across the killed process and its restart: every epoch once
        assert_wandb_history_is_the_metrics(run_dir, run_id)


def test_ray_runtime_trial_actors_run_inside_its_placement_group(ray_cluster, tmp_path):
    path = write_study(tmp_path, """
        envs: [InvertedPendulum-v5]
        seeds: [0]
        budget: {env_steps: 400}
        variants:
          actors: {algo: mbpo, runtime: ray, ray.num_rollout_workers: 1}
        wandb: {mode: disabled}
        """, "group")
    # the trial process, learner, model trainer, collector, rollout worker (1 CPU each)
    bundles = [{"CPU": 1.0}] * 5

    class CheckPlacement(tune.Callback):
        seen = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            groups = [(pg_id, entry) for pg_id, entry in ray.util.placement_group_table().items()
                      if entry["state"] == "CREATED"]
            assert len(groups) == 1, groups
            pg_id, entry = groups[0]
            assert list(entry["bundles"].values()) == bundles
            # Each bundle's CPU is taken (the group's own resource, CPU_group_<i>_<id>), and
            # outside the group only the unreserved CPUs remain: the actors run in the group.
            # (Ray's view of free resources lags a little: look again for a few seconds.)
            deadline = time.time() + 20
            while True:
                free = ray.available_resources()
                used = [free.get(f"CPU_group_{i}_{pg_id}", 0.0) == 0.0 for i in range(len(bundles))]
                if all(used) and free.get("CPU", 0.0) == CLUSTER_CPUS - len(bundles) or time.time() > deadline:
                    break
                time.sleep(0.5)
            self.seen.append((used, free.get("CPU", 0.0)))

    check = CheckPlacement()
    assert sweep(str(path), out=str(tmp_path / "study"), callbacks=[check], verbose=0) == 0
    assert check.seen and all(all(used) and cpu == CLUSTER_CPUS - len(bundles) for used, cpu in check.seen), check.seen
    run = RunDirectory(tmp_path / "study" / "runs" / "mbpo-actors-InvertedPendulum-v5-seed0")
    assert env_steps(run) == [200, 400]
    assert run.load_config().runtime == "ray"


def test_trial_that_can_never_be_placed_is_refused_at_submission(ray_cluster, tmp_path):
    path = write_study(tmp_path, """
        envs: [InvertedPendulum-v5]
        seeds: [0]
        variants:
          big: {algo: mbpo, runtime: ray, ray.num_rollout_workers: 20}
        wandb: {mode: disabled}
        """, "too_big")
    start = time.perf_counter()
    with pytest.raises(StudyError, match=r"^variants.big.ray.num_rollout_workers: trial mbpo-big-InvertedPendulum-v5-seed0 "
                                         r"needs 24 CPU .* but the Ray cluster has 8 CPU: it could never start"):
        sweep(str(path), out=str(tmp_path / "study"), verbose=0)
    assert time.perf_counter() - start < 60  # refused, not waiting for resources that never come
    assert not (tmp_path / "study").exists()


def _metrics(folder: Path, name: str) -> Path:
    return folder / "runs" / name / "metrics.jsonl"


def _lines(path: Path):
    return path.read_text().splitlines() if path.is_file() else []


def _trial_pid(run_dir: Path) -> Optional[int]:
    """The process of the trial whose run directory is ``run_dir``: the parent of the W&B service
    that holds the run's ``.wandb`` file open (a process scan that other tests' trials, running
    beside this one, cannot match)."""
    wandb_dir = str(run_dir / "wandb")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            held = any(os.readlink(fd).startswith(wandb_dir) for fd in (proc / "fd").iterdir())
            if held:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (Path("/proc") / str(parent) / "cmdline").read_bytes().startswith(b"ray::"):
                    return parent
        except OSError:
            continue
    return None


def test_killed_trial_then_driver_resume_with_every_epoch_once_in_metrics_and_wandb(ray_cluster, tmp_path):
    """A trial's process SIGKILLed mid-run (Tune restarts it), then the study driver's process
    group SIGKILLed, then `mbpo-ray sweep --resume`: the finished trial is not run again, the
    unfinished one continues from its checkpoint, and each trial's W&B run, read back from its
    offline files in upload order, holds every epoch of its metrics.jsonl once, then its curve,
    and ends finished (docs/sweeps.md, "W&B")."""
    path = write_study(tmp_path, """
        algorithms: [sac]
        envs: [InvertedPendulum-v5]
        seeds: [0, 1]
        budget: {env_steps: 800}
        max_concurrent_trials: 1
        max_failures: 1
        wandb: {mode: offline}
        """, "killed")
    folder = tmp_path / "study"
    first, second = "sac-InvertedPendulum-v5-seed0", "sac-InvertedPendulum-v5-seed1"
    command = [sys.executable, "-m", "mbpo_ray", "sweep"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(command + [str(path), "--out", str(folder), "--address", ray_cluster.address],
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def wait_for(done, what):
        deadline = time.time() + 300
        while not done():
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, f"the study did not get to {what} in 300 s"
            time.sleep(0.1)
    try:
        # the first trial has written two epochs (Tune has recorded its first checkpoint) and
        # given W&B the second: its process is killed with that epoch in its W&B service
        wait_for(lambda: len(_lines(_metrics(folder, first))) >= 2 and _trial_pid(folder / "runs" / first),
                 "the first kill")
        os.kill(_trial_pid(folder / "runs" / first), signal.SIGKILL)
        # then the first trial finished; the second has written two epochs and has two to go
        wait_for(lambda: len(_lines(_metrics(folder, first))) == 4 and len(_lines(_metrics(folder, second))) >= 2,
                 "the driver's kill")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
    assert len(_lines(_metrics(folder, second))) < 4, "the second trial finished before the kill"
    before_first = _metrics(folder, first).read_bytes()
    before_first_checkpoint = (folder / "runs" / first / "checkpoint.pt").stat().st_mtime_ns
    before_second = _lines(_metrics(folder, second))
    # Ray ends the dead driver's trial; wait until its resources are free
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0) < CLUSTER_CPUS and time.time() < deadline:
        time.sleep(0.5)

    resumed = subprocess.run(command + ["--resume", str(folder), "--address", ray_cluster.address], capture_output=True,
                             text=True, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming study killed" in resumed.stdout
    # the finished trial was not run again
    assert _metrics(folder, first).read_bytes() == before_first
    assert (folder / "runs" / first / "checkpoint.pt").stat().st_mtime_ns == before_first_checkpoint
    # the unfinished one continued from its checkpoint: every epoch once, the first one as
    # written before the kill
    after = _lines(_metrics(folder, second))
    assert env_steps(RunDirectory(folder / "runs" / second)) == [200, 400, 600, 800]
    assert after[0] == before_second[0]
    study_id = json.loads((folder / "sweep.json").read_text())["id"]
    # the first trial: its killed process and its restart; the second: before and after the driver kill
    for name, processes in ((first, 2), (second, 2)):
        parts = assert_wandb_history_is_the_metrics(folder / "runs" / name, stable_run_id(study_id, name))
        assert len(parts) == processes, (name, parts)


def test_the_bucket_gets_wandb_logs_as_the_tune_checkpoint_has_them_until_the_run_ends(tmp_path):
    """Object-store storage: what the trial's artifacts hold of its W&B run is what a trial
    restored from its last Tune checkpoint knows it holds (so a restored trial sends no epoch
    twice), and all of it once the run has ended."""
    from mbpo_ray.tune.trainable import ArtifactMirror

    source, target, snapshot = tmp_path / "trial", tmp_path / "tune", tmp_path / "snapshot"
    log = Path("wandb") / "offline-run-20260101_000000-r" / "run-r.wandb"
    for folder, text in ((source, "live 1"), (snapshot, "at the checkpoint")):
        (folder / log).parent.mkdir(parents=True)
        (folder / log).write_text(text)
    (source / "metrics.jsonl").write_text("{}\n")
    mirror = ArtifactMirror(source, target)
    mirror.sync(wandb_logs_from=None)  # an epoch without a checkpoint
    assert (target / "metrics.jsonl").is_file() and not (target / log).exists()
    mirror.sync(wandb_logs_from=snapshot)  # a checkpoint
    assert (target / log).read_text() == "at the checkpoint"
    (source / log).write_text("live 2, longer")
    mirror.sync(wandb_logs_from=None)
    assert (target / log).read_text() == "at the checkpoint"
    mirror.sync()  # the run has ended
    assert (target / log).read_text() == "live 2, longer"


@pytest.mark.parametrize("seeds", [[3], [0, 4]])
def test_a_full_tune_checkpoint_restores_every_run_of_the_trial(seeds, tmp_path):
    """Object-store storage: a Tune checkpoint holds the trial's runs (checkpoint.pt, metrics,
    config, W&B's transaction logs; a group's group.yaml) and a restored trial gets them back in
    a new folder."""
    from mbpo_ray.tune.trainable import TrialRuns, restore_snapshot, write_snapshot

    trial = TrialRuns(tmp_path / "node1", seeds)
    if len(seeds) > 1:
        GroupDirectory(trial.path).create(seeds)
    for seed, run in trial.runs().items():
        run.path.mkdir(parents=True, exist_ok=True)
        for path in (run.checkpoint_path, run.metrics_path, run.config_path):
            path.write_bytes(f"{path.name} of seed {seed}".encode())
        # the W&B transaction logs of the run's two processes so far (what its W&B run holds)
        for folder in ("offline-run-20260101_000000-r", "offline-run-20260101_000100-r"):
            (run.path / "wandb" / folder).mkdir(parents=True)
            (run.path / "wandb" / folder / "run-r.wandb").write_bytes(f"{folder} of seed {seed}".encode())
    snapshot = tmp_path / "snapshot"
    write_snapshot(trial, snapshot)
    # no tool takes the snapshot for a run directory
    assert find_run_dirs([snapshot]) == [] and not (snapshot / "group.yaml").exists()
    moved = TrialRuns(tmp_path / "node2", seeds)
    restore_snapshot(tune.Checkpoint.from_directory(str(snapshot)), moved)
    before = {p.relative_to(trial.path): p.read_bytes() for p in trial.path.rglob("*") if p.is_file()}
    after = {p.relative_to(moved.path): p.read_bytes() for p in moved.path.rglob("*") if p.is_file()}
    assert after == before and len(before) == 5 * len(seeds) + (len(seeds) > 1)
