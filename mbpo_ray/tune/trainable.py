"""The Ray Tune function trainable of a sweep: one trial is one `mbpo-ray train` run.

``run_trial`` builds the trial's TrainConfig from its cell and search values and hands it to
``mbpo_ray.train.train`` with two hooks: ``TuneReporter`` reports every epoch record with
``tune.report`` (with a Tune checkpoint whenever train wrote checkpoint.pt) and the W&B logger.
A restarted or restored trial resumes as `mbpo-ray train --resume` does (docs/sweeps.md,
"Faults"). What a Tune checkpoint holds depends on the storage:

- a local or NFS study folder: the trial's run directory is in it (``STUDY/runs/<trial>``) and
  is the trial's state; the Tune checkpoint records the env step of the run's checkpoint.pt
  (``snapshot.json``). A resumed trial continues from the run directory's checkpoint.pt, the
  newest one, which is at or past the Tune checkpoint's step. Nothing is copied, and Tune
  keeps every (tiny) checkpoint, so its experiment state never names a deleted one.
- an ``s3://`` / ``gs://`` study folder: the run directory is the trial's working directory on
  its node; the Tune checkpoint holds checkpoint.pt and copies of metrics.jsonl and
  config.yaml (renamed, so that no tool takes it for a run directory), and a restored trial
  first puts them back into its new working directory.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import ray
from ray import tune

from mbpo_ray.errors import RunDirError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import TrainHook, train
from mbpo_ray.tune.study import trial_bundles, trial_config
from mbpo_ray.wandb_log import WandbLogger, WandbOptions, stable_run_id

SNAPSHOT_PREFIX = ".tune-checkpoint-"
SNAPSHOT_METRICS = "metrics-snapshot.jsonl"
SNAPSHOT_CONFIG = "config-snapshot.yaml"
SNAPSHOT_INFO = "snapshot.json"
# Added to every result a trial reports to Tune (not to metrics.jsonl): the Ray node that ran
# it, so that Tune's results show where each trial ran and where a restarted trial went on.
NODE_KEY = "node_id"


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link where the filesystem allows it
    (neither file is ever modified in place: checkpoints are replaced, not rewritten), else a
    copy."""
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class TuneReporter(TrainHook):
    """Reports each epoch record to Tune; a record followed by a checkpoint carries a Tune
    checkpoint (the module docstring says of what)."""

    def __init__(self, full_snapshots: bool):
        self.full_snapshots = full_snapshots
        self.run: Optional[RunDirectory] = None
        self.node_id = ray.get_runtime_context().get_node_id()

    def start(self, run: RunDirectory, cfg) -> None:
        self.run = run

    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        result = {**record, NODE_KEY: self.node_id}
        if checkpoint is None:
            tune.report(result)
            return
        folder = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=self.run.path))
        try:
            if self.full_snapshots:
                link_or_copy(checkpoint, folder / "checkpoint.pt")
                shutil.copyfile(self.run.metrics_path, folder / SNAPSHOT_METRICS)
                shutil.copyfile(self.run.config_path, folder / SNAPSHOT_CONFIG)
            (folder / SNAPSHOT_INFO).write_text(json.dumps({"env_steps": record["env_steps"]}))
            # Tune copies the folder into the study's storage before report returns
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def checkpoint_step(checkpoint: "tune.Checkpoint") -> int:
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / SNAPSHOT_INFO).read_text())["env_steps"]


def restore_snapshot(checkpoint: "tune.Checkpoint", run: RunDirectory) -> None:
    """Put a full Tune checkpoint back into the run directory (object-store storage)."""
    run.path.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        link_or_copy(folder / "checkpoint.pt", run.checkpoint_path)
        shutil.copyfile(folder / SNAPSHOT_METRICS, run.metrics_path)
        shutil.copyfile(folder / SNAPSHOT_CONFIG, run.config_path)


def clear_run(run: RunDirectory) -> None:
    """A trial that starts from scratch (a first start, or a restart before its first
    checkpoint) owns its run directory: empty it of what an earlier attempt wrote (that
    attempt sent nothing to W&B, which waits for a checkpoint)."""
    if not run.path.is_dir():
        return
    for entry in run.path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def trial_resources(config: Dict[str, Any], cells: Dict[str, Dict[str, Any]]) -> "tune.PlacementGroupFactory":
    """What Tune reserves for a trial (``mbpo_ray.tune.study.trial_bundles``)."""
    cell = cells[config["cell"]]
    cfg = trial_config(cell, config.get("search"))
    return tune.PlacementGroupFactory(trial_bundles(cfg, cell["gpus_per_trial"]), strategy="PACK")


def run_trial(config: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """The function trainable. ``settings`` (the same for every trial of a study): ``runs_dir``
    (the study's ``runs/`` folder, or None when the storage is a URI and the run directory is
    the trial's working directory, uploaded by Tune), ``study``, ``study_id``, ``wandb``
    (``WandbOptions.to_plain()``), ``cells`` (each cell's ``Cell.to_plain()`` by name: a
    trial's config holds its cell's name and its search values)."""
    cell, search = settings["cells"][config["cell"]], dict(config.get("search") or {})
    cfg = trial_config(cell, search)
    name = tune.get_context().get_trial_name()
    shared = settings["runs_dir"] is not None
    run = RunDirectory(Path(settings["runs_dir"]) / name if shared else Path.cwd())

    for leftover in run.path.glob(SNAPSHOT_PREFIX + "*"):  # a snapshot folder of a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    tune_checkpoint = tune.get_checkpoint()
    if not shared and tune_checkpoint is not None:
        restore_snapshot(tune_checkpoint, run)
    state = run.load_checkpoint() if run.checkpoint_path.is_file() else None
    if tune_checkpoint is not None:
        recorded = checkpoint_step(tune_checkpoint)
        if state is None or state["env_steps"] < recorded:
            raise RunDirError(f"{run.path}: Tune recorded a checkpoint at env step {recorded} for trial {name} "
                              f"but the run directory's checkpoint.pt is "
                              f"{'missing' if state is None else 'at ' + str(state['env_steps'])}")
    if state is None:
        clear_run(run)
    elif state["env_steps"] >= cfg.total_steps:  # finished before the study's driver stopped
        tune.report({**run.read_metrics()[-1], NODE_KEY: ray.get_runtime_context().get_node_id()})
        return

    hooks = [TuneReporter(full_snapshots=not shared)]
    options = WandbOptions(**{**settings["wandb"], "tags": tuple(settings["wandb"]["tags"])})
    if options.mode != "disabled":
        options.group = options.group or settings["study"]
        extra = {"study": settings["study"], "trial": name, "variant": cell["variant"],
                 **{f"search/{k}": v for k, v in search.items()}}
        hooks.append(WandbLogger(options, name, stable_run_id(settings["study_id"], name), extra))
    train(cfg, str(run.path), resume=state is not None, progress=False, checkpoint=state, hooks=hooks)
