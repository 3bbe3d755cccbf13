"""The Ray Tune function trainable of a sweep: one trial is one `mbpo-ray train` run, or with
the study's ``seeds_per_trial`` one `mbpo-ray train --seeds` group (docs/seed_groups.md).

``run_trial`` builds the trial's TrainConfig from its cell and search values and hands it to
``mbpo_ray.train.train`` (or ``mbpo_ray.seed_group.train_group``) with its followers:
``TuneReporter`` reports every epoch with ``tune.report`` (with a Tune checkpoint whenever the
run's checkpoint.pt, or every seed's, was written) and one W&B logger per seed. A restarted or
restored trial resumes as `mbpo-ray train --resume` does (docs/sweeps.md, "Faults"). What a
Tune checkpoint holds depends on the storage:

- a local or NFS study folder: the trial's folder is in it (``STUDY/runs/<trial>``) and is the
  trial's state; the Tune checkpoint records the env step of its checkpoint.pt
  (``snapshot.json``). A resumed trial continues from the newest checkpoint.pt, which is at or
  past the Tune checkpoint's step. Nothing is copied, and Tune keeps every (tiny) checkpoint,
  so its experiment state never names a deleted one.
- an ``s3://`` / ``gs://`` study folder: the trial's folder is a scratch folder on its node,
  outside Tune's working directory (``scratch_folder``); the Tune checkpoint holds each run's
  checkpoint.pt and copies of its metrics.jsonl and config.yaml (renamed, so that no tool takes
  it for a run directory; packed seeds under ``seed<N>/`` with the group's group.yaml) and of its
  W&B transaction logs (what its W&B run holds), and a restored trial first puts them back into
  its folder. Everything of the run directory but
  its checkpoints (metrics.jsonl, config.yaml, curve.png, wandb/) is mirrored into the working
  directory before each report (``ArtifactMirror``), which Tune uploads as the trial's
  artifacts: each checkpoint reaches the bucket once, in a Tune checkpoint, and Tune's
  ``num_to_keep`` prunes it there (docs/sweeps.md, "Storage").
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import ray
from ray import tune

from mbpo_ray.atomic import replacing
from mbpo_ray.driver import GroupHook, TrainHook
from mbpo_ray.errors import RunDirError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.seed_group import train_group
from mbpo_ray.group_dir import GroupDirectory
from mbpo_ray.train import train
from mbpo_ray.tune.study import trial_bundles, trial_config
from mbpo_ray.wandb_log import WandbLogger, WandbOptions, own_service, stable_run_id

SNAPSHOT_PREFIX = ".tune-checkpoint-"
SNAPSHOT_METRICS = "metrics-snapshot.jsonl"
SNAPSHOT_CONFIG = "config-snapshot.yaml"
SNAPSHOT_GROUP = "group-snapshot.yaml"
SNAPSHOT_INFO = "snapshot.json"
# W&B's transaction log of each run of a trial (a packed trial's under seed<N>/)
WANDB_LOGS = "**/wandb/*run-*/run-*.wandb"
LIVE: Any = object()  # ``ArtifactMirror.sync``: W&B's logs as they are in the trial folder
# Added to every result a trial reports to Tune (not to metrics.jsonl): the Ray node that ran
# it, so that Tune's results show where each trial ran and where a restarted trial went on.
NODE_KEY = "node_id"
# A trial of packed seeds reports, besides the seeds' mean of every metric, how many seeds it
# trains and each seed's eval return under this prefix (docs/sweeps.md, "Packed seeds").
SEEDS_KEY = "seeds"


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s content, atomically: a hard link where the filesystem allows it
    (neither file is ever modified in place: checkpoints are replaced, not rewritten), else a
    copy."""
    with replacing(dst) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


class TrialRuns:
    """The run directories of one trial: its folder is the run directory (one seed), or a seed
    group's directory with one run directory per seed (packed seeds, docs/seed_groups.md)."""

    def __init__(self, path: Path, seeds: List[int]):
        self.path, self.seeds = path, list(seeds)
        self.group = GroupDirectory(path) if len(self.seeds) > 1 else None

    def runs(self) -> Dict[int, RunDirectory]:
        if self.group is None:
            return {self.seeds[0]: RunDirectory(self.path)}
        return {seed: self.group.lane(seed) for seed in self.seeds}

    def snapshot_files(self) -> List[Tuple[Path, str]]:
        """(file in the trial folder, its name in a full Tune checkpoint): each run's
        checkpoint.pt, metrics.jsonl and config.yaml, renamed so that no tool takes the
        checkpoint for a run directory, and a group's group.yaml."""
        files = [] if self.group is None else [(self.group.group_file, SNAPSHOT_GROUP)]
        for run in self.runs().values():
            where = "" if self.group is None else run.path.name + "/"
            files += [(run.checkpoint_path, where + "checkpoint.pt"),
                      (run.metrics_path, where + SNAPSHOT_METRICS),
                      (run.config_path, where + SNAPSHOT_CONFIG)]
        return files

    def wandb_logs(self) -> List[Tuple[Path, str]]:
        """(file, its name in a full Tune checkpoint): the W&B transaction logs of the trial's
        runs (``WANDB_LOGS``, a few KB an epoch), so that a trial restored on another node knows
        what its W&B run holds (docs/sweeps.md, "W&B")."""
        return [(log, str(log.relative_to(self.path))) for log in self.path.glob(WANDB_LOGS) if not log.is_symlink()]

    def load_checkpoints(self) -> Optional[Dict[int, Dict[str, Any]]]:
        """Every run's checkpoint, or None when some run has none (the trial starts afresh)."""
        runs = self.runs()
        if self.group is not None and self.group.is_group():
            self.group.finish_interrupted_save()
        if not all(run.checkpoint_path.is_file() for run in runs.values()):
            return None
        return {seed: run.load_checkpoint() for seed, run in runs.items()}

    def last_records(self) -> Dict[int, Dict[str, Any]]:
        return {seed: run.read_metrics()[-1] for seed, run in self.runs().items()}


def tune_result(records: Dict[int, Dict[str, Any]], node_id: str) -> Dict[str, Any]:
    """What a trial reports to Tune for one epoch of its seeds (``records`` by seed): a single
    run's record as it is; for packed seeds, each key the seeds share with one value, every
    other number as the seeds' mean (ASHA and the summary compare trials by
    ``eval/return_mean``), ``seeds`` and each seed's ``seed<N>/eval/return_mean``."""
    if len(records) == 1:
        return {**next(iter(records.values())), NODE_KEY: node_id}
    first = next(iter(records.values()))
    result: Dict[str, Any] = {}
    for key in first:
        values = [record.get(key) for record in records.values()]
        if all(v == values[0] for v in values):
            result[key] = values[0]
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            result[key] = float(np.mean(values))
    result[SEEDS_KEY] = len(records)
    for seed, record in records.items():
        result[f"seed{seed}/eval/return_mean"] = record.get("eval/return_mean")
    return {**result, NODE_KEY: node_id}


# What of a run directory is not mirrored into Tune's working directory (object-store storage):
# the checkpoints, which reach the bucket in Tune checkpoints only.
NOT_MIRRORED = ("checkpoint.pt", "checkpoint.pt.next", "checkpoints")


def scratch_folder(study_id: str, trial_name: str) -> Path:
    """Where a trial of an object-store study keeps its run directory on its node: outside
    Tune's working directory, whose every file Tune uploads after each report and never
    prunes."""
    return Path(tempfile.gettempdir()) / "mbpo-ray-trials" / study_id / trial_name


class ArtifactMirror:
    """Copies a trial's run directory, less ``NOT_MIRRORED``, into Tune's working directory
    (object-store storage: the trial's artifacts). A file is copied again only when its size or
    modification time changed.

    W&B's transaction logs (``WANDB_LOGS``) are copied from ``wandb_logs_from``: the Tune
    checkpoint being written (so that what the bucket holds of a W&B run is what a trial
    restored from that checkpoint knows it holds, and a restored trial sends no epoch twice),
    None between checkpoints (left as they are), or the trial folder itself once the run has
    ended (``sync``'s default)."""

    def __init__(self, source: Path, target: Path):
        self.source, self.target = source, target
        self.copied: Dict[str, Tuple[int, int]] = {}

    def sync(self, wandb_logs_from: Optional[Path] = LIVE) -> None:
        if not self.source.is_dir():
            return
        logs = {str(log.relative_to(self.source)) for log in self.source.glob(WANDB_LOGS)}
        for path in sorted(self.source.rglob("*")):
            rel = path.relative_to(self.source)
            if (any(part in NOT_MIRRORED or part.startswith(SNAPSHOT_PREFIX) for part in rel.parts)
                    or path.is_symlink() or not path.is_file()):
                continue
            if str(rel) in logs and wandb_logs_from is not LIVE:
                if wandb_logs_from is None or not (wandb_logs_from / rel).is_file():
                    continue
                path = wandb_logs_from / rel
            try:
                stat = path.stat()
                key = (stat.st_size, stat.st_mtime_ns)
                if self.copied.get(str(rel)) == key:
                    continue
                dst = self.target / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with replacing(dst) as tmp:
                    shutil.copyfile(path, tmp)
                self.copied[str(rel)] = key
            except FileNotFoundError:  # a file W&B replaced meanwhile: the next sync takes it
                continue


class TuneReporter(GroupHook):
    """Reports each epoch of a trial's seeds to Tune (``tune_result``); an epoch followed by
    checkpoints carries a Tune checkpoint (the module docstring says of what). A single run
    reaches it through ``SingleRunReporter``."""

    def __init__(self, trial: TrialRuns, full_snapshots: bool, mirror: Optional[ArtifactMirror] = None,
                 deadline: Optional[float] = None):
        self.trial, self.full_snapshots, self.mirror = trial, full_snapshots, mirror
        self.deadline = deadline  # the study's time budget as a wall-clock time (``sweep._settings``)
        self.node_id = ray.get_runtime_context().get_node_id()

    def epoch(self, records: Dict[int, Dict[str, Any]], checkpointed: bool) -> None:
        result = tune_result(records, self.node_id)
        if not checkpointed:
            if self.mirror is not None:
                self.mirror.sync(wandb_logs_from=None)
            self._report(result)
            return
        # beside the trial's folder, never inside Tune's working directory (which Tune uploads)
        folder = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX, dir=self.trial.path.parent))
        try:
            if self.full_snapshots:
                write_snapshot(self.trial, folder)
            if self.mirror is not None:
                self.mirror.sync(wandb_logs_from=folder)
            (folder / SNAPSHOT_INFO).write_text(json.dumps({"env_steps": result["env_steps"]}))
            # Tune copies the folder into the study's storage before report returns
            self._report(result, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _report(self, result: Dict[str, Any], checkpoint: Optional["tune.Checkpoint"] = None) -> None:
        """``tune.report``. When Tune has stopped the trial (its scheduler, the study's time
        budget), report raises SystemExit in this thread, or the session is gone: the run then
        ends after this epoch as Ctrl-C ends it (``stop_requested``: a checkpoint, the W&B run
        flushed and finished), while the trainable's ``stop`` waits for it (``trial_class``)."""
        if TrialProcess.stopping:
            self.stop_requested = True
            return
        try:
            tune.report(result, checkpoint=checkpoint)
        except SystemExit:
            self.stop_requested = True
        # The study's time budget ends the run here, after this epoch, as Ctrl-C would: Tune's own
        # time budget would end the experiment and give each running trial 5 s before killing
        # it (too short for a checkpoint, the curve and W&B's finish), so it is only a backstop
        if self.deadline is not None and time.time() >= self.deadline:
            self.stop_requested = True


class SingleRunReporter(TrainHook):
    """``TuneReporter`` as the hook of a single run."""

    def __init__(self, reporter: TuneReporter, seed: int):
        self.reporter, self.seed = reporter, seed

    @property
    def stop_requested(self) -> bool:
        return self.reporter.stop_requested

    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        self.reporter.epoch({self.seed: record}, checkpoint is not None)


def checkpoint_step(checkpoint: "tune.Checkpoint") -> int:
    with checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / SNAPSHOT_INFO).read_text())["env_steps"]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.name == "checkpoint.pt":
        link_or_copy(src, dst)
    else:
        shutil.copyfile(src, dst)


def write_snapshot(trial: TrialRuns, folder: Path) -> None:
    """A full Tune checkpoint's files (object-store storage): ``TrialRuns.snapshot_files``."""
    for source, name in trial.snapshot_files() + trial.wandb_logs():
        _copy(source, folder / name)


def restore_snapshot(checkpoint: "tune.Checkpoint", trial: TrialRuns) -> None:
    """Put a full Tune checkpoint back into the trial folder (object-store storage)."""
    with checkpoint.as_directory() as folder:
        for target, name in trial.snapshot_files():
            _copy(Path(folder) / name, target)
        for log in Path(folder).glob(WANDB_LOGS):
            target = trial.path / log.relative_to(folder)
            if not target.exists():
                _copy(log, target)


def clear_run(path: Path) -> None:
    """A trial that starts from scratch (a first start, or a restart before its first
    checkpoint) owns its folder: empty it of what an earlier attempt wrote (that attempt sent
    nothing to W&B, which waits for a checkpoint)."""
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def trial_resources(config: Dict[str, Any], cells: Dict[str, Dict[str, Any]]) -> "tune.PlacementGroupFactory":
    """What Tune reserves for a trial (``mbpo_ray.tune.study.trial_bundles``)."""
    cell = cells[config["cell"]]
    cfg = trial_config(cell, config.get("search"))
    return tune.PlacementGroupFactory(trial_bundles(cfg, cell["gpus_per_trial"]), strategy="PACK")


# How long a stopped trial's ``stop`` waits for its run to end: the epoch in progress, the
# checkpoint and W&B's finish of a stopped run (``TuneReporter._report``).
STOP_GRACE_S = 300.0


class TrialProcess:
    """What the Tune trainable of this process (``trial_class``) and its training thread
    (``run_trial``) share: whether Tune is stopping the trial, and when its run has ended."""

    stopping = False
    done: Optional[threading.Event] = None


def trial_class(function):
    """The trainable class of ``function`` (a ``run_trial`` with its parameters): Tune's own
    function trainable, whose ``stop`` waits for the run to end instead of leaving it mid-epoch.
    Tune stops a trial (its scheduler, the study's time budget) by ending its actor once
    ``stop`` returns, which without this wait would cut a stopped run off before its checkpoint,
    its curve and its W&B run's finish."""
    from ray.tune.trainable import wrap_function

    base = wrap_function(function)

    class MbpoTrial(base):
        def cleanup(self):
            TrialProcess.stopping = True
            try:
                super().cleanup()
            finally:
                if TrialProcess.done is not None:
                    TrialProcess.done.wait(STOP_GRACE_S)

    return MbpoTrial


def run_trial(config: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """The function trainable. ``settings`` (the same for every trial of a study): ``runs_dir``
    (the study's ``runs/`` folder, or None when the storage is a URI: the trial's folder is then
    a scratch folder mirrored into Tune's working directory), ``study``, ``study_id``, ``wandb``
    (``WandbOptions.to_plain()``), ``cells`` (each cell's ``Cell.to_plain()`` by name: a
    trial's config holds its cell's name and its search values). A cell of packed seeds runs
    them as a seed group (``mbpo_ray.seed_group.train_group``)."""
    # set at once: the trainable's stop waits on it, whichever way this function returns
    TrialProcess.stopping, TrialProcess.done = False, threading.Event()
    try:
        _run_trial(config, settings)
    finally:
        TrialProcess.done.set()


def _run_trial(config: Dict[str, Any], settings: Dict[str, Any]) -> None:
    cell, search = settings["cells"][config["cell"]], dict(config.get("search") or {})
    cfg = trial_config(cell, search)
    name = tune.get_context().get_trial_name()
    shared = settings["runs_dir"] is not None
    path = Path(settings["runs_dir"]) / name if shared else scratch_folder(settings["study_id"], name)
    path.mkdir(parents=True, exist_ok=True)
    trial = TrialRuns(path, cell["seeds"])
    mirror = None if shared else ArtifactMirror(trial.path, Path.cwd())

    for leftover in trial.path.parent.glob(SNAPSHOT_PREFIX + "*"):  # a snapshot folder of a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    tune_checkpoint = tune.get_checkpoint()
    if not shared and tune_checkpoint is not None:
        restore_snapshot(tune_checkpoint, trial)
    states = trial.load_checkpoints()
    if tune_checkpoint is not None:
        recorded = checkpoint_step(tune_checkpoint)
        behind = {s: (None if states is None else states[s]["env_steps"]) for s in trial.seeds}
        if any(step is None or step < recorded for step in behind.values()):
            found = ", ".join(f"seed{s} {'missing' if n is None else 'at ' + str(n)}" for s, n in behind.items())
            raise RunDirError(f"{trial.path}: Tune recorded a checkpoint at env step {recorded} for trial {name} "
                              f"but the run directory's checkpoint.pt is {found}")
    deadline = settings.get("deadline")
    if states is None and deadline is not None and time.time() >= deadline:
        return  # the study's time budget has passed: not started (the summary says so)
    if states is None:
        clear_run(trial.path)
    # A trial that finished before the study's driver stopped is resumed like any other (no
    # epoch is left to run): its W&B run gets what it lacks (docs/sweeps.md, "W&B"), then the
    # trial reports its last epoch to Tune.
    finished = states is not None and min(state["env_steps"] for state in states.values()) >= cfg.total_steps

    reporter = TuneReporter(trial, full_snapshots=not shared, mirror=mirror, deadline=deadline)
    loggers = {seed: [] for seed in trial.seeds}
    options = WandbOptions(**{**settings["wandb"], "tags": tuple(settings["wandb"]["tags"])})
    if options.mode != "disabled":
        own_service()
        options.group = options.group or settings["study"]
        for seed in trial.seeds:
            run_name = name if len(trial.seeds) == 1 else f"{name}-seed{seed}"
            extra = {"study": settings["study"], "trial": name, "variant": cell["variant"],
                     **{f"search/{k}": v for k, v in search.items()}}
            loggers[seed].append(WandbLogger(options, run_name, stable_run_id(settings["study_id"], run_name), extra))
    resume = states is not None
    try:
        if len(trial.seeds) == 1:
            seed = trial.seeds[0]
            hooks = [SingleRunReporter(reporter, seed)] + loggers[seed]
            train(cfg, str(trial.path), resume=resume, progress=False, checkpoint=states and states[seed],
                  hooks=hooks)
        else:
            train_group(cfg, trial.seeds, str(trial.path), resume=resume, progress=False, checkpoints=states,
                        hooks=loggers, group_hooks=[reporter])
    finally:
        if mirror is not None:  # the curve and W&B's last files; Tune uploads them as the trial ends
            mirror.sync()
    if finished:
        tune.report(tune_result(trial.last_records(), reporter.node_id))
