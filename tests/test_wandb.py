"""W&B logging (mbpo_ray/wandb_log.py, docs/sweeps.md "W&B"): the mode rule, what the logger
sends (checked against a stand-in for the wandb module: config, env_steps as the step axis,
each record once, the curve image), and `mbpo-ray train --wandb` with the real wandb in
offline mode: the run's files, a resume continuing the same W&B run, and no API key in any
file."""
from __future__ import annotations

import os
import sys
import types

import pytest

from mbpo_ray.cli import main
from mbpo_ray.config import to_dict
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.driver import TrainResult
from helpers import assert_wandb_history_is_the_metrics
from mbpo_ray.wandb_log import WandbLogger, WandbOptions, existing_run_id, resolve_mode, stable_run_id

FAKE_KEY = "fake-wandb-key-fedcba9876543210fedcba9876543210"
TINY = ["--env", "InvertedPendulum-v5", "--algo", "sac", "--steps", "400", "--seed", "3", "--device", "cpu",
        "--set", "eval_episodes=2", "--set", "mbpo.epoch_length=200", "--set", "mbpo.init_random_steps=200",
        "--set", "sac.hidden_width=32", "--set", "sac.batch_size=64", "--set", "torch_threads=1"]


def test_mode_is_online_only_with_a_key_unless_forced():
    assert resolve_mode("auto", {}) == "offline"
    assert resolve_mode("auto", {"WANDB_API_KEY": "k"}) == "online"
    # WANDB_MODE in the environment wins over auto (W&B's convention), not over a forced mode
    assert resolve_mode("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"
    assert resolve_mode("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode("auto", {"WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode("auto", {"WANDB_MODE": "online"}) == "online"
    assert resolve_mode("online", {"WANDB_MODE": "offline"}) == "online"
    assert resolve_mode("offline", {"WANDB_API_KEY": "k"}) == "offline"
    assert resolve_mode("disabled", {"WANDB_API_KEY": "k"}) == "disabled"
    with pytest.raises(ValueError, match="wandb mode 'cloud' is not allowed: one of auto, offline, online, disabled"):
        resolve_mode("cloud", {})


def test_existing_run_id_is_the_newest_runs(tmp_path):
    assert existing_run_id(tmp_path) is None
    for name in ("offline-run-20240101_000000-abc", "run-20240301_120000-xyz_1", "latest-run", "debug.log"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert existing_run_id(tmp_path) == "xyz_1"
    assert stable_run_id("s1", "sac-Hopper-v5-seed0") == stable_run_id("s1", "sac-Hopper-v5-seed0")
    assert stable_run_id("s1", "sac-Hopper-v5-seed0") != stable_run_id("s2", "sac-Hopper-v5-seed0")


class FakeRun:
    fail_log = False
    fail_finish = False

    def __init__(self, **init):
        self.init, self.logged, self.steps, self.metrics, self.summary, self.finished = init, [], [], [], {}, 0
        self.resumed, self.starting_step = False, 0

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, row, step=None, commit=None):
        if self.fail_log:
            raise OSError("the W&B service went away")
        assert commit is True and step is not None
        self.logged.append(row)
        self.steps.append(step)

    def finish(self, exit_code=None):
        self.finished += 1
        if self.fail_finish:
            raise OSError("the W&B service went away")


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    module.refuse_online = False
    module.teardowns = 0

    def init(**kwargs):
        if module.refuse_online and kwargs["mode"] == "online":
            raise RuntimeError("Failed to get resume status for run x: context deadline exceeded\nmore")
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    def teardown():
        module.teardowns += 1
    module.init = init
    module.teardown = teardown
    module.Settings = lambda **kwargs: kwargs
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_logger_sends_config_records_once_covered_by_a_checkpoint_and_the_curve(fake_wandb, tmp_path, tiny_config):
    cfg = tiny_config()
    run = RunDirectory(tmp_path / "run")
    run.create(cfg)
    run.curve_path.write_bytes(b"png")
    logger = WandbLogger(WandbOptions(project="p", entity="e", group="g", tags=("a",), mode="offline"), "sac-x-seed3",
                         run_id="id1", extra_config={"study": "s"})
    logger.start(run, cfg)
    wb = fake_wandb.runs[0]
    assert wb.init["mode"] == "offline" and wb.init["dir"] == str(run.path) and wb.init["id"] == "id1"
    assert (wb.init["project"], wb.init["entity"], wb.init["group"], wb.init["name"], wb.init["tags"]) == \
        ("p", "e", "g", "sac-x-seed3", ["a"])
    assert wb.init["config"] == {**to_dict(cfg), "study": "s"}
    assert ("*", "env_steps") in wb.metrics  # env_steps is every key's step axis
    records = [{"env_steps": 200 * i, "eval/return_mean": float(i), "model/holdout_mse": 0.1} for i in (1, 2, 3)]
    _epoch(logger, run, records[0], checkpointed=False)
    assert wb.logged == []  # no checkpoint covers it yet: a resume would redo this epoch
    _epoch(logger, run, records[1])
    assert wb.logged == records[:2]
    _epoch(logger, run, records[2], checkpointed=False)
    logger.end(TrainResult(run, 600, True, 3.0))
    assert wb.logged[:3] == records and wb.logged[3] == {"env_steps": 600, "curve": ("image", str(run.curve_path))}
    assert wb.steps == [0, 1, 2, 3]  # explicit history steps: a resumed run's rows come after these
    assert wb.summary["completed"] is True
    logger.close()
    logger.close()
    assert wb.finished == 1


def _records(n):
    return [{"env_steps": 200 * i, "eval/return_mean": float(i)} for i in range(1, n + 1)]


def test_an_online_start_that_fails_continues_offline_as_the_same_run(fake_wandb, tmp_path, tiny_config, capfd,
                                                                      monkeypatch):
    import mbpo_ray.wandb_log as wandb_log

    monkeypatch.setattr(wandb_log, "_ONLINE_FAILED", False)
    cfg = tiny_config()
    run = RunDirectory(tmp_path / "run")
    run.create(cfg)
    fake_wandb.refuse_online = True
    logger = WandbLogger(WandbOptions(mode="online", init_timeout=2.5), "sac-x-seed3", run_id="id1")
    logger.start(run, cfg)
    assert [r.init["mode"] for r in fake_wandb.runs] == ["offline"] and fake_wandb.runs[0].init["id"] == "id1"
    assert fake_wandb.runs[0].init["settings"]["init_timeout"] == 2.5
    assert fake_wandb.teardowns == 1  # the failed run's service is shut down (no other run was open)
    err = capfd.readouterr().err
    assert err.count("mbpo-ray: warning: W&B:") == 1 and "within 2.5 s" in err and "wandb sync" in err
    _epoch(logger, run, _records(1)[0])
    assert fake_wandb.runs[0].logged == _records(1)
    # a second run of the same process does not wait for W&B again
    other = WandbLogger(WandbOptions(mode="online"), "sac-x-seed4", run_id="id2")
    other.start(run, cfg)
    assert [r.init["mode"] for r in fake_wandb.runs] == ["offline", "offline"]
    # run.finish() only informs the service; the service is shut down (and its files written to
    # their end) once the process's last open run is finished, not while another is open
    logger.close()
    assert fake_wandb.teardowns == 1
    other.close()
    assert fake_wandb.teardowns == 2


def _epoch(logger, run, record, checkpointed=True):
    """What the driver does at an epoch's end: the record to metrics.jsonl, then the hook."""
    run.append_metrics(record)
    logger.epoch(record, run.checkpoint_path if checkpointed else None)


def test_a_wandb_error_restarts_the_run_which_resends_what_was_lost_then_gives_up(fake_wandb, tmp_path, tiny_config,
                                                                                  capfd, monkeypatch):
    cfg = tiny_config()
    run = RunDirectory(tmp_path / "run")
    run.create(cfg)
    run.curve_path.write_bytes(b"png")
    logger = WandbLogger(WandbOptions(mode="offline"), "x", run_id="id1")
    logger.start(run, cfg)
    records = _records(5)
    _epoch(logger, run, records[0])
    first = fake_wandb.runs[0]
    first.fail_log = True  # its service is gone
    _epoch(logger, run, records[1], checkpointed=False)
    _epoch(logger, run, records[2])  # fails, restarts: the new run gets what the first did not write
    assert first.finished == 1 and len(fake_wandb.runs) == 2 and fake_wandb.runs[1].init["id"] == "id1"
    second = fake_wandb.runs[1]
    # the stand-in writes no .wandb file, so nothing was durably held: every epoch again, in order
    assert second.logged == records[:3] and second.steps == [0, 1, 2]
    assert capfd.readouterr().err.count("could not log an epoch (OSError: the W&B service went away); "
                                        "restarting the W&B run") == 1
    # a W&B that keeps failing: two restarts a run, then the run goes on without W&B
    monkeypatch.setattr(FakeRun, "fail_log", True)
    _epoch(logger, run, records[3])
    assert logger.run is None and len(fake_wandb.runs) == 3 and all(r.finished == 1 for r in fake_wandb.runs)
    _epoch(logger, run, records[4])
    logger.end(TrainResult(run, 1000, True, 3.0))
    logger.close()
    err = capfd.readouterr().err
    assert "restarting the W&B run" in err and "could not restart the W&B run (OSError" in err
    assert len(fake_wandb.runs) == 3 and fake_wandb.runs[2].logged == []
    # finish failing
    monkeypatch.setattr(FakeRun, "fail_log", False)
    logger = WandbLogger(WandbOptions(mode="offline"), "x", run_id="id2")
    logger.start(run, cfg)
    fake_wandb.runs[-1].fail_finish = True
    logger.close()
    assert "could not finish the run (OSError" in capfd.readouterr().err


def test_a_dead_service_under_a_seed_group_is_replaced_once_and_every_seed_catches_up(fake_wandb, tmp_path,
                                                                                      tiny_config):
    cfg = tiny_config()
    runs = {seed: RunDirectory(tmp_path / f"seed{seed}") for seed in (0, 1)}
    loggers = {seed: WandbLogger(WandbOptions(mode="offline"), f"x-seed{seed}", run_id=f"id{seed}") for seed in runs}
    for seed, logger in loggers.items():
        runs[seed].create(cfg)
        logger.start(runs[seed], cfg)
    records = _records(2)
    for seed in runs:
        _epoch(loggers[seed], runs[seed], records[0])
    for wb in fake_wandb.runs:
        wb.fail_log = True  # the service both runs use is gone
    teardowns = fake_wandb.teardowns
    for seed in runs:
        _epoch(loggers[seed], runs[seed], records[1])
    # seed 0's restart replaced the service (with seed 1's run still open); seed 1 then failed on
    # the old one and restarted on the new one without replacing it again
    assert fake_wandb.teardowns == teardowns + 1
    assert [r.init["id"] for r in fake_wandb.runs] == ["id0", "id1", "id0", "id1"]
    assert all(r.logged == records for r in fake_wandb.runs[2:])
    for logger in loggers.values():
        logger.close()


def test_a_resumed_online_run_sends_only_what_w_and_bs_servers_lack(fake_wandb, tmp_path, tiny_config):
    cfg = tiny_config()
    run = RunDirectory(tmp_path / "run")
    run.create(cfg)
    run.curve_path.write_bytes(b"png")
    records = _records(4)
    for record in records:
        run.append_metrics(record)
    original_init = fake_wandb.init

    def resumed_init(**kwargs):  # W&B's servers acknowledged two epochs, as steps 0 and 1
        wb = original_init(**kwargs)
        wb.resumed, wb.starting_step, wb.summary = True, 2, {"env_steps": 400, "eval/return_mean": 2.0}
        return wb
    fake_wandb.init = resumed_init
    logger = WandbLogger(WandbOptions(mode="online"), "x", run_id="id1")
    logger.start(run, cfg)
    wb = fake_wandb.runs[0]
    assert wb.logged == records[2:] and wb.steps == [2, 3]
    logger.end(TrainResult(run, 800, True, 4.0))
    assert wb.logged[-1] == {"env_steps": 800, "curve": ("image", str(run.curve_path))} and wb.steps[-1] == 4
    logger.close()
    # resumed again once W&B holds it all, curve included: nothing is sent twice
    fake_wandb.runs.clear()

    def complete_init(**kwargs):
        wb = original_init(**kwargs)
        wb.resumed, wb.starting_step = True, 5
        wb.summary = {"env_steps": 800, "curve": {"_type": "image-file"}, "completed": True}
        return wb
    fake_wandb.init = complete_init
    logger = WandbLogger(WandbOptions(mode="online"), "x", run_id="id1")
    logger.start(run, cfg)
    logger.end(TrainResult(run, 800, True, 4.0))
    logger.close()
    assert fake_wandb.runs[0].logged == [] and fake_wandb.runs[0].finished == 1


def test_train_with_a_key_and_an_unreachable_wandb_logs_offline(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir), "--wandb", "--wandb-init-timeout", "3", "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "could not reach W&B within 3 s" in err
    assert len(RunDirectory(run_dir).read_metrics()) == 2
    folders = sorted(p.name for p in (run_dir / "wandb").iterdir() if p.is_dir() and not p.is_symlink())
    run_id = existing_run_id(run_dir)
    assert folders == [f for f in folders if f.startswith("offline-run-")] and len(folders) == 1
    data = (run_dir / "wandb" / folders[0] / f"run-{run_id}.wandb").read_bytes()
    assert b"eval/return_mean" in data and b"curve" in data
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()] == []


def closed_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_disabled_logger_does_not_import_wandb(monkeypatch, tmp_path, tiny_config):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail
    logger = WandbLogger(WandbOptions(mode="disabled"), "x")
    run = RunDirectory(tmp_path)
    logger.start(run, tiny_config())
    logger.epoch({"env_steps": 1}, run.checkpoint_path)
    logger.close()  # an import of wandb anywhere above raises ImportError: the test fails
    assert not (tmp_path / "wandb").exists()  # and nothing of W&B is written


def test_wandb_flags_need_wandb(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "run"), "--wandb-project", "p"]) == 2
    assert "--wandb-project needs --wandb" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_wandb_offline_writes_its_run_and_a_resume_continues_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    run_dir = tmp_path / "run"
    flags = ["--wandb", "--wandb-mode", "offline", "--wandb-project", "proj", "--wandb-group", "grp", "--no-progress"]
    assert main(["train", *TINY, "--out", str(run_dir), *flags]) == 0
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = existing_run_id(run_dir)
    assert main(["train", "--resume", str(run_dir), "--steps", "600", *flags]) == 0
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all((r / f"run-{run_id}.wandb").is_file() for r in runs), (runs, run_id)  # the same W&B run
    data = b"".join((r / f"run-{run_id}.wandb").read_bytes() for r in runs)
    for text in ("sac-InvertedPendulum-v5-seed3", "grp", "proj", "env_steps", "eval/return_mean", "sac.batch_size", "curve"):
        assert text.encode() in data, text
    files = [p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes()] == []


def test_a_process_drops_a_wandb_service_it_did_not_start():
    from mbpo_ray.wandb_log import own_service

    inherited = {"WANDB_SERVICE": "3-1-unix-/tmp/other.sock", "OTHER": "x"}
    own_service(inherited)
    assert inherited == {"OTHER": "x"}
    mine = {"WANDB_SERVICE": f"3-{os.getpid()}-tcp-localhost-4711"}
    own_service(mine)
    assert mine == {"WANDB_SERVICE": f"3-{os.getpid()}-tcp-localhost-4711"}


# A run of `mbpo-ray train --wandb` (offline) whose faults come from hooks around the W&B logger:
# FAULTS names them, each "<what>@<env_steps>": "service" SIGKILLs the process's wandb-core service
# after that epoch (the next log fails and the logger restarts the W&B run), "epoch" SIGKILLs the
# process after the W&B logger has taken that epoch (still in the service's buffer), "end"
# SIGKILLs it at the end of the run before the W&B logger sends the curve and finishes.
FAULTY_TRAIN = r"""
import os, signal, sys
from pathlib import Path
from mbpo_ray.cli import main
import mbpo_ray.wandb_log as wandb_log

faults = dict(reversed(f.split("@")) for f in os.environ["FAULTS"].split(",") if f)

def service_pids():
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"wandb-core" in cmd:
            yield int(proc.name)

class Faults:
    def __init__(self, when):
        self.when = when
    def start(self, run, cfg):
        pass
    def epoch(self, record, checkpoint):
        what = faults.get(str(record["env_steps"]))
        if self.when == "after" and what == "epoch":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.when == "after" and what == "service":
            for pid in list(service_pids()):
                os.kill(pid, signal.SIGKILL)
    def end(self, result):
        if self.when == "before" and "end" in faults.values():
            os.kill(os.getpid(), signal.SIGKILL)
    def close(self):
        pass

made = wandb_log.train_hooks
wandb_log.train_hooks = lambda *a: [Faults("before"), *made(*a), Faults("after")]
sys.exit(main(sys.argv[1:]))
"""


def _train_with_faults(args, faults):
    import subprocess

    env = {**os.environ, "FAULTS": faults, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-c", FAULTY_TRAIN, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_every_epoch_reaches_wandb_once_after_killed_processes_and_a_killed_service(tmp_path):
    """The W&B history read back from the run's offline files (mbpo_ray.wandb_records, the rows
    in the order `wandb sync` uploads the folders) equals metrics.jsonl after: the W&B service
    killed under the run, the process killed with two epochs in the service's buffer, the
    resumed process killed at the end before its curve and finish, a last resume."""
    from mbpo_ray.wandb_records import run_files

    run_dir = tmp_path / "run"
    flags = ["--wandb", "--no-progress"]
    first = _train_with_faults(["train", *TINY, "--steps", "800", "--out", str(run_dir), *flags],
                               "service@200,epoch@400")
    assert first.returncode == -9, first.stderr[-2000:]
    assert "restarting the W&B run" in first.stderr  # the service's death was noticed at the next epoch
    second = _train_with_faults(["train", "--resume", str(run_dir), *flags], "end@800")
    assert second.returncode == -9, second.stderr[-2000:]
    third = _train_with_faults(["train", "--resume", str(run_dir), *flags], "")
    assert third.returncode == 0, third.stderr[-2000:]

    assert [r["env_steps"] for r in RunDirectory(run_dir).read_metrics()] == [200, 400, 600, 800]
    parts = assert_wandb_history_is_the_metrics(run_dir, existing_run_id(run_dir))
    assert len(parts) == 4  # first process (2 runs: one restarted), second, third
    rows = [row for part in parts for row in part.history]
    assert sum("curve" in row for row in rows) == 1
    steps = [row["_step"] for row in rows]
    # a finished run resumed once more has nothing to send: no new W&B folder
    assert _train_with_faults(["train", "--resume", str(run_dir), *flags], "").returncode == 0
    assert len(run_files(run_dir, existing_run_id(run_dir))) == 4
    # resumed for one more epoch: what W&B holds is not sent again, the new epoch and curve follow
    assert _train_with_faults(["train", "--resume", str(run_dir), "--steps", "1000", *flags], "").returncode == 0
    parts = run_files(run_dir, existing_run_id(run_dir))
    assert len(parts) == 5 and parts[-1].exit_code == 0
    assert [(row["env_steps"], "curve" in row) for row in parts[-1].history] == [(1000, False), (1000, True)]
    assert [row["_step"] for row in parts[-1].history] == [steps[-1] + 1, steps[-1] + 2]


def _wandb_file(path, records, cut=0):
    """A ``.wandb`` file as W&B writes it (docs in mbpo_ray/wandb_records.py): ``records`` split
    over 32 KiB blocks, a record that does not fit in its block's rest continued in the next;
    ``cut`` bytes taken off the end (a killed writer)."""
    import struct
    import zlib

    from mbpo_ray.wandb_records import BLOCK_BYTES, FILE_HEADER

    out = bytearray(FILE_HEADER)
    for record in records:
        data, first = record.SerializeToString(), True
        while True:
            room = BLOCK_BYTES - len(out) % BLOCK_BYTES
            if room < 7:
                out += bytes(room)
                continue
            chunk, data = data[:room - 7], data[room - 7:]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + chunk), len(chunk), kind) + chunk
            first = False
            if not data:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out[:len(out) - cut]))


def _history(step, **values):
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    record.history.step.num = step
    for key, value in values.items():
        item = record.history.item.add()
        if isinstance(value, dict):  # a media value: one item per field
            record.history.item.pop()
            for field, v in value.items():
                item = record.history.item.add()
                item.nested_key.extend([key, field])
                item.value_json = json.dumps(v)
        else:
            item.key, item.value_json = key, json.dumps(value)
    return record


def _exit(code):
    from wandb.proto import wandb_internal_pb2 as pb

    record = pb.Record()
    record.exit.exit_code = code
    return record


def test_the_wandb_reader_reads_records_across_blocks_stops_at_a_cut_tail_and_compares_with_metrics(tmp_path,
                                                                                                    tiny_config):
    from mbpo_ray.wandb_records import history_mismatch, run_files

    run = RunDirectory(tmp_path / "run")
    run.create(tiny_config())
    records = [{"env_steps": 200 * i, "eval/return_mean": float(i), "note": "x" * 9000} for i in (1, 2, 3, 4, 5)]
    for record in records:
        run.append_metrics(record)
    wandb_dir = run.path / "wandb"
    # the first process: three epochs written (45 KB: the second spans two blocks), the third cut
    _wandb_file(wandb_dir / "offline-run-20260101_000000-r1" / "run-r1.wandb",
                [_history(i, **r) for i, r in enumerate(records[:3])], cut=10)
    # the second: the rest, the curve, finished
    curve = {"_type": "image-file", "path": "media/images/curve.png"}
    second = [_history(2 + i, **r) for i, r in enumerate(records[2:])] + [_history(5, env_steps=1000, curve=curve),
                                                                         _exit(0)]
    _wandb_file(wandb_dir / "offline-run-20260101_000100-r1" / "run-r1.wandb", second)
    parts = run_files(run.path, "r1")
    assert [[row["env_steps"] for row in part.history] for part in parts] == [[200, 400], [600, 800, 1000, 1000]]
    assert parts[0].exit_code is None and parts[1].exit_code == 0
    assert parts[1].history[-1]["curve"] == curve and parts[0].history[1]["note"] == "x" * 9000
    assert history_mismatch(run.path, "r1") is None
    # what it tells apart: an epoch twice, a value changed, no curve at the end, no finish
    _wandb_file(wandb_dir / "offline-run-20260101_000000-r1" / "run-r1.wandb",
                [_history(i, **r) for i, r in enumerate(records[:3])])
    assert "W&B holds the epochs at env steps [200, 400, 600, 600, 800, 1000]" in history_mismatch(run.path, "r1")
    _wandb_file(wandb_dir / "offline-run-20260101_000100-r1" / "run-r1.wandb",
                [_history(2, **records[2]), _history(3, **{**records[3], "eval/return_mean": 9.0}),
                 _history(4, **records[4]), _exit(0)])
    _wandb_file(wandb_dir / "offline-run-20260101_000000-r1" / "run-r1.wandb",
                [_history(i, **r) for i, r in enumerate(records[:2])])
    assert "800 env steps has eval/return_mean 9.0 on W&B, 4.0 in metrics.jsonl" in history_mismatch(run.path, "r1")
    _wandb_file(wandb_dir / "offline-run-20260101_000100-r1" / "run-r1.wandb",
                [_history(2 + i, **r) for i, r in enumerate(records[2:])] + [_exit(0)])
    assert "does not end with the curve at 1000" in history_mismatch(run.path, "r1")
    _wandb_file(wandb_dir / "offline-run-20260101_000100-r1" / "run-r1.wandb", second[:-1])
    assert "last part did not finish (exit code None)" in history_mismatch(run.path, "r1")


def test_videos_every_epoch_reach_the_offline_wandb_run(tmp_path):
    """``video_every_epochs=1``: each epoch's row of the W&B run holds the policy and dream videos
    of that epoch's checkpoint, and the MP4s are in the offline run's files."""
    from mbpo_ray.wandb_records import run_files

    run_dir = tmp_path / "run"
    mbpo = [a if a != "sac" else "mbpo" for a in TINY]
    assert main(["train", *mbpo, "--out", str(run_dir), "--wandb", "--wandb-mode", "offline", "--no-progress",
                 "--set", "video_every_epochs=2", "--set", "eval_episodes=1"]) == 0
    (part,) = run_files(run_dir, existing_run_id(run_dir))
    epochs = [row for row in part.history if "curve" not in row]
    assert [row["env_steps"] for row in epochs] == [200, 400]
    assert "video/policy" not in epochs[0]  # every second epoch
    for name in ("policy", "dream"):
        video = epochs[1][f"video/{name}"]
        assert video["_type"] == "video-file" and video["path"].endswith(".mp4")
        assert (part.path.parent / "files" / video["path"]).stat().st_size > 1000
    assert (run_dir / "videos" / "step_400" / "dream.json").is_file()
