"""`mbpo-ray sweep`: a validated study run as Ray Tune trials, or a killed one continued.

The study folder (``--out``, else ``storage/name``)::

    STUDY/study.yaml        the study as run (every key resolved; --resume reads it)
    STUDY/sweep.json        the study's id (W&B run ids) and when it started
    STUDY/trials.txt        the trial table (as --dry-run prints it)
    STUDY/runs/<trial>/     one ordinary run directory per trial (config.yaml, metrics.jsonl,
                            checkpoint.pt, curve.png, wandb/)
    STUDY/tune/             Tune's experiment: its state, each trial's results and its last
                            checkpoints (Tune restores from these)

With an ``s3://`` or ``gs://`` storage the run directories, less their checkpoints, reach
``STUDY/tune/<trial>/`` as Tune's artifacts and their checkpoints as Tune checkpoints there
(mbpo_ray/tune/trainable.py; docs/sweeps.md, "Storage").
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mbpo_ray.atomic import write_atomic
from mbpo_ray.errors import ConfigError
from mbpo_ray.runtime.ray.capacity import Capacity, autoscaling, cluster_capacity, fmt as _fmt, total
from mbpo_ray.tune.study import (ASHA_METRIC, ASHA_TIME_ATTR, STORAGE_SCHEMES, CellPlan, Study, StudyError,
                                 dump_study, load_study, parse_yaml, resource_fields, study_from_yaml,
                                 trial_table, validate_study)

TUNE_FOLDER = "tune"
RUNS_FOLDER = "runs"
STUDY_FILE = "study.yaml"
SWEEP_FILE = "sweep.json"
TABLE_FILE = "trials.txt"
# Logical CPUs above the machine's cores are fine for an in-process Ray: most actors of a
# Ray-runtime trial wait on each other (docs/architecture.md, "Resources and devices").
DEFAULT_OBJECT_STORE_MB = 512


# --- the study folder ----------------------------------------------------------------------------

@dataclass
class StudyFolder:
    """A study folder: a local (or NFS) path, or an ``s3://`` / ``gs://`` URI."""

    location: str

    @property
    def is_uri(self) -> bool:
        return self.location.startswith(STORAGE_SCHEMES) and not self.location.startswith("file://")

    @property
    def path(self) -> Path:
        """The folder as an absolute path: trials run in working directories of Tune's choosing, so
        a relative ``--out`` (or ``storage``) must not reach them as it was typed."""
        local = self.location[len("file://"):] if self.location.startswith("file://") else self.location
        return Path(local).expanduser().absolute()

    @property
    def runs_dir(self) -> Optional[str]:
        return None if self.is_uri else str(self.path / RUNS_FOLDER)

    @property
    def storage_path(self) -> str:
        """Tune's storage_path: the experiment goes to ``<this>/tune``."""
        return self.location if self.is_uri else str(self.path)

    def _fs(self) -> Tuple[Any, str]:
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.location)

    def is_new(self) -> bool:
        if not self.is_uri:
            return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))
        import pyarrow.fs

        fs, path = self._fs()
        info = fs.get_file_info(path)
        return info.type == pyarrow.fs.FileType.NotFound or (
            info.type == pyarrow.fs.FileType.Directory and not fs.get_file_info(pyarrow.fs.FileSelector(path)))

    def exists(self) -> bool:
        if not self.is_uri:
            return self.path.is_dir()
        import pyarrow.fs

        fs, path = self._fs()
        return fs.get_file_info(path).type == pyarrow.fs.FileType.Directory

    def write(self, name: str, text: str) -> None:
        if not self.is_uri:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path / name, text)
            return
        fs, path = self._fs()
        fs.create_dir(path)
        with fs.open_output_stream(f"{path}/{name}") as out:
            out.write(text.encode())

    def read(self, name: str) -> Optional[str]:
        if not self.is_uri:
            file = self.path / name
            return file.read_text() if file.is_file() else None
        import pyarrow.fs

        fs, path = self._fs()
        if fs.get_file_info(f"{path}/{name}").type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(f"{path}/{name}") as stream:
            return stream.read().decode()


def study_folder(study: Study, out: Optional[str]) -> StudyFolder:
    if out:
        return StudyFolder(out)
    return StudyFolder(study.storage.rstrip("/") + "/" + study.name)


# --- Ray -----------------------------------------------------------------------------------------

def connect(plans: Sequence[CellPlan], address: Optional[str]) -> bool:
    """Join ``address`` (or RAY_ADDRESS), or start Ray in-process with as many logical CPUs as
    the machine has cores or the largest trial asks for, whichever is more. Returns whether
    this call started or joined Ray (and so should shut it down). A Ray already initialised in
    this process (tests) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    cpus = max(os.cpu_count() or 1, max(int(math.ceil(total(p.bundles).get("CPU", 1))) for p in plans))
    store = max([DEFAULT_OBJECT_STORE_MB] + [p.cfg.ray.object_store_mb for p in plans if p.runtime == "ray"])
    # address="local": a new instance even when another Ray runs on this machine
    ray.init(address="local", num_cpus=cpus, object_store_memory=store * 1024 * 1024,
             include_dashboard=False, log_to_driver=False)
    return True


def check_cluster(plans: Sequence[CellPlan], capacity: Capacity) -> List[CellPlan]:
    """A trial whose placement group could never be placed is an error now, not a trial that
    waits forever: its total must fit what the cluster can ever have and each bundle one node
    it has or may get (``Capacity``: the live nodes, and an autoscaler's node types). Returns
    the trials that fit the cluster only once its autoscaler has added nodes."""
    waiting = []
    grows = capacity.describe_types()
    for plan in plans:
        need = total(plan.bundles)
        short = {k: v for k, v in need.items() if v > capacity.most(k) + 1e-9}
        if short:
            name = next(iter(short))
            have = _fmt({k: capacity.most(k) for k in short})
            raise StudyError(
                f"{_origin(plan, name)}: trial {plan.cell.name} needs {_fmt(need)} (its placement group: "
                f"{len(plan.bundles)} bundle{'s' if len(plan.bundles) > 1 else ''}) but the Ray cluster has "
                f"{have if not capacity.autoscaling else f'at most {have} ({grows})'}: it could never start. Lower "
                f"{resource_fields(plan.runtime, name)}, or join a cluster that has them (--address)")
        for bundle in plan.bundles:
            if not capacity.node_fits(bundle, ever=True):
                name = next(iter(bundle))
                shapes = [_fmt({k: v for k, v in n.items() if k in ('CPU', 'GPU')}) for n in capacity.nodes]
                shapes += [f"{t.name}: {_fmt({k: v for k, v in t.resources.items() if k in ('CPU', 'GPU')})}"
                           for t in capacity.node_types]
                raise StudyError(
                    f"{_origin(plan, name)}: trial {plan.cell.name} has a bundle of {_fmt(bundle)} that no "
                    f"node of the Ray cluster can hold (nodes{' and node types' if capacity.node_types else ''}: "
                    f"{'; '.join(shapes)}). Lower {resource_fields(plan.runtime, name)}")
        if not capacity.fits_now(plan.bundles):
            waiting.append(plan)
    return waiting


def waiting_note(waiting: Sequence[CellPlan], capacity: Capacity) -> str:
    """What the summary of a sweep says of trials that wait for the autoscaler ('' for none)."""
    if not waiting:
        return ""
    need = _fmt(total(waiting[0].bundles))
    return (f"{len(waiting)} trial{'s' if len(waiting) > 1 else ''} (e.g. {waiting[0].cell.name}, {need}) "
            f"do not fit the nodes alive now ({_fmt(capacity.now())}): pending on the autoscaler, which adds "
            f"nodes for them ({capacity.describe_types()})\n")


def _origin(plan: CellPlan, resource: str) -> str:
    """The study key that set the resource (else the fields that would)."""
    if plan.runtime != "ray":
        if resource == "GPU":
            return "gpus_per_trial"
        return plan.cell.origin.get("torch_threads", "torch_threads")
    keys = [k for k in plan.cell.origin if k.startswith("ray.") and
            (k.endswith("_gpus") if resource == "GPU" else not k.endswith("_gpus"))]
    return plan.cell.origin[keys[0]] if keys else resource_fields("ray", resource)


# --- shared storage (docs/clusters.md, "Storage") -------------------------------------------------

# Filesystem types, as /proc/mounts names them, whose files every machine that mounts them sees:
# network and cluster filesystems, and FUSE mounts of object stores and remote disks.
SHARED_FILESYSTEMS = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "lustre", "glusterfs", "gpfs", "beegfs", "wekafs",
    "fuse.ceph-fuse", "fuse.gcsfuse", "fuse.glusterfs", "fuse.goofys", "fuse.juicefs", "fuse.rclone",
    "fuse.s3fs", "fuse.sshfs"))
MOUNTS_FILE = "/proc/mounts"


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes a space, tab, newline or backslash in a path as an octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str, mounts_text: Optional[str] = None) -> Optional[str]:
    """The type of the filesystem that holds ``path`` (or, when it does not exist yet, the
    folder it would be made in), from /proc/mounts: the longest mount point above it, the last
    one mounted there winning. None where /proc/mounts cannot be read (not Linux)."""
    if mounts_text is None:
        try:
            mounts_text = Path(MOUNTS_FILE).read_text()
        except OSError:
            return None
    target, tail = Path(path).expanduser().absolute(), []
    while not target.exists() and target != target.parent:  # links resolved where the path exists
        tail.append(target.name)
        target = target.parent
    target_text = Path(os.path.realpath(target)).joinpath(*reversed(tail)).as_posix()
    best: Optional[Tuple[int, str]] = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, kind = _unescape_mount(fields[1]), fields[2]
        inside = target_text == point or target_text.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), kind)
    return best[1] if best else None


def storage_refusal(location: str, source: str, declared_shared: bool, driver_ip: str,
                    node_ips: Sequence[str], autoscaling: bool, fs_type: Optional[str]) -> Optional[str]:
    """Why a study folder at ``location`` cannot serve the cluster's nodes, or None when it can.
    A folder serves every node when it is an ``s3://`` / ``gs://`` URI, when the study declares
    ``storage_shared: true``, when its filesystem is one every node mounts
    (``SHARED_FILESYSTEMS``), or when every node is on the driver's machine (``node_ips`` all
    equal ``driver_ip``: one machine, or a simulated cluster on it) and no autoscaler can add
    others. ``source`` is the study key or flag that set the location."""
    if StudyFolder(location).is_uri or declared_shared or (fs_type or "") in SHARED_FILESYSTEMS:
        return None
    others = sorted({ip for ip in node_ips if ip != driver_ip})
    if not others and not autoscaling:
        return None
    where = []
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        where.append(f"{len(others)} other machine{'s' if len(others) > 1 else ''} ({shown})")
    if autoscaling:
        where.append("an autoscaler that adds nodes on other machines")
    return (f"{source} {location}: a folder on this machine's own disk (filesystem "
            f"{fs_type or 'unknown'}), but the Ray cluster has {' and '.join(where)}, whose trials could not "
            f"write there. Set storage (or --out) to an s3:// or gs:// URI, or to a path on a filesystem "
            f"that every node mounts at the same place (NFS, SMB, CephFS, Lustre, ...); for a shared "
            f"filesystem not recognised here, set storage_shared: true in the study (docs/clusters.md)")


def node_addresses() -> Tuple[str, List[str]]:
    """The driver's machine and every live node's, as Ray names them (NodeManagerAddress)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    mine = ray.get_runtime_context().get_node_id()
    driver = next((n["NodeManagerAddress"] for n in nodes if n["NodeID"] == mine), None)
    return driver or ray.util.get_node_ip_address(), [n["NodeManagerAddress"] for n in nodes]


def check_storage(study: Study, folder: StudyFolder, source: str) -> None:
    """Refuse, before any trial starts, a study folder that some node of the cluster cannot
    write to (``storage_refusal``)."""
    import ray

    if folder.is_uri or ray.util.client.ray.is_connected():  # Ray Client: Tune runs on the head
        return
    driver_ip, node_ips = node_addresses()
    problem = storage_refusal(folder.location, source, study.storage_shared, driver_ip, node_ips,
                              autoscaling(), filesystem_type(str(folder.path)))
    if problem:
        raise StudyError(problem)


def check_envs(plans: Sequence[CellPlan]) -> None:
    """Make each distinct env of the study once (mbpo_ray.envs.prepare_config): an env that does
    not exist, bad env_kwargs, unsupported spaces or a malformed termination function stop the
    sweep before anything is written."""
    from mbpo_ray.envs import prepare_config

    seen = set()
    for plan in plans:
        cfg = plan.cfg
        key = (cfg.env_id, json.dumps(cfg.env_kwargs, sort_keys=True, default=str), cfg.mbpo.termination)
        if key in seen:
            continue
        seen.add(key)
        try:
            prepare_config(cfg)
        except ConfigError as exc:
            raise StudyError(f"envs: {cfg.env_id} (trial {plan.cell.name}): {exc}") from None


# --- Tune ----------------------------------------------------------------------------------------

def trial_name(trial, indexed: bool) -> str:
    """A trial's name and folder: its cell's name, with Tune's trial index when a cell has
    several trials (search spaces, samples)."""
    name = trial.config["cell"]
    return f"{name}-{trial.trial_id.rsplit('_', 1)[-1]}" if indexed else name


def param_space(study: Study, plans: Sequence[CellPlan]) -> Dict[str, Any]:
    from ray import tune

    space: Dict[str, Any] = {"cell": tune.grid_search([p.cell.name for p in plans])}
    if study.search:
        makers = {"grid": tune.grid_search, "choice": tune.choice}
        ranges = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
        space["search"] = {key: makers[s.kind](list(s.values)) if s.kind in makers else ranges[s.kind](*s.values)
                           for key, s in study.search.items()}
    return space


def trainable(settings: Dict[str, Any]):
    from ray import tune

    from mbpo_ray.tune.trainable import run_trial, trial_class, trial_resources

    return tune.with_resources(trial_class(tune.with_parameters(run_trial, settings=settings)),
                               functools.partial(trial_resources, cells=settings["cells"]))


def default_grace_period(plans: Sequence[CellPlan]) -> int:
    """ASHA's grace period when the study sets none: the random warm-up plus one epoch of the
    trial that takes longest to get there, so that no trial is ranked on returns of its random
    warm-up (at most the longest budget)."""
    past_warmup = max(p.cfg.mbpo.init_random_steps + p.cfg.mbpo.epoch_length for p in plans)
    return min(past_warmup, max(p.total_steps for p in plans))


def make_tuner(study: Study, plans: Sequence[CellPlan], folder: StudyFolder, settings: Dict[str, Any],
               callbacks: Sequence[Any], verbose: int):
    from ray import tune

    from mbpo_ray.tune.trainable import STOP_GRACE_S

    scheduler = None
    if study.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        longest = max(p.total_steps for p in plans)
        scheduler = ASHAScheduler(time_attr=ASHA_TIME_ATTR, metric=ASHA_METRIC, mode="max", max_t=longest,
                                  grace_period=study.grace_period or default_grace_period(plans),
                                  reduction_factor=study.reduction_factor)
    namer = functools.partial(trial_name, indexed=study.searched)
    # Tune's time budget only as a backstop behind the trials' own deadline (``_settings``): at
    # its end Tune gives running trials 5 s before it kills them
    backstop = study.time_budget_s + STOP_GRACE_S if study.time_budget_s else None
    return tune.Tuner(
        trainable(settings),
        param_space=param_space(study, plans),
        tune_config=tune.TuneConfig(num_samples=study.samples, max_concurrent_trials=study.max_concurrent_trials,
                                    time_budget_s=backstop, scheduler=scheduler,
                                    trial_name_creator=namer, trial_dirname_creator=namer),
        run_config=tune.RunConfig(
            name=TUNE_FOLDER, storage_path=folder.storage_path, verbose=verbose, callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            # Local/NFS: a Tune checkpoint only names an env step (trainable.py), so all are
            # kept and Tune's state never names a deleted one. Object stores: full snapshots,
            # the newest two kept (docs/sweeps.md, "Faults").
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if folder.is_uri else None),
            sync_config=tune.SyncConfig(sync_artifacts=folder.is_uri)))


# --- the command -----------------------------------------------------------------------------------

def _settings(study: Study, plans: Sequence[CellPlan], folder: StudyFolder, study_id: str) -> Dict[str, Any]:
    """What every trial of the study shares (``run_trial``'s ``settings``)."""
    # the time budget as a wall-clock deadline, from this start of the sweep (a --resume gets the
    # whole budget again, as Tune's own time budget did): trials end their runs at the first epoch
    # after it (TuneReporter), and trials not started by then never start
    deadline = time.time() + study.time_budget_s if study.time_budget_s else None
    return {"runs_dir": folder.runs_dir, "study": study.name, "study_id": study_id, "deadline": deadline,
            "wandb": study.wandb.to_plain(), "cells": {p.cell.name: p.cell.to_plain() for p in plans}}


def sweep(study_path: Optional[str] = None, out: Optional[str] = None, address: Optional[str] = None,
          dry_run: bool = False, resume: Optional[str] = None, wandb_overrides: Optional[Dict[str, Any]] = None,
          callbacks: Sequence[Any] = (), verbose: int = 1, stream=None) -> int:
    """Run (or with ``resume``, continue) a study; 0 when every trial finished, 1 when some
    failed. Errors in the study or the cluster raise ``StudyError`` before anything is written."""
    stream = stream or sys.stdout
    if resume:
        folder = StudyFolder(resume)
        text = folder.read(STUDY_FILE) if folder.exists() else None
        if text is None:
            raise StudyError(f"--resume {resume}: no {STUDY_FILE} there; is it a study folder of mbpo-ray sweep?")
        state = json.loads(folder.read(SWEEP_FILE) or "{}")
        source = f"{resume}/{STUDY_FILE}"
        study = study_from_yaml(parse_yaml(text, source), source, "study", wandb_overrides)
        study_id = state.get("id") or secrets.token_hex(4)
    else:
        study = load_study(study_path, wandb_overrides)
        folder = study_folder(study, out)
        if not folder.is_new():
            raise StudyError(f"--out {folder.location} already holds files; continue that study with "
                             f"--resume {folder.location}, or choose a new --out")
        study_id = secrets.token_hex(4)
    plans = validate_study(study)
    check_envs(plans)
    table = trial_table(study, plans, folder.location)
    if dry_run:
        stream.write(table)
        stream.write("dry run: nothing started or written\n")
        return 0

    import ray

    started = connect(plans, address)
    try:
        capacity = cluster_capacity()
        stream.write(waiting_note(check_cluster(plans, capacity), capacity))
        check_storage(study, folder, "--resume" if resume else "--out" if out else "storage")
        settings = _settings(study, plans, folder, study_id)
        if resume:
            from ray import tune

            stream.write(f"resuming study {study.name} in {folder.location}\n")
            tuner = tune.Tuner.restore(_tune_path(folder), trainable=trainable(settings),
                                       resume_unfinished=True, resume_errored=True)
        else:
            folder.write(STUDY_FILE, dump_study(study))
            folder.write(SWEEP_FILE, json.dumps({"id": study_id, "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
            folder.write(TABLE_FILE, table)
            stream.write(table)
            tuner = make_tuner(study, plans, folder, settings, callbacks, verbose)
        results = tuner.fit()
        return _summary(results, plans, folder, stream)
    finally:
        if started:
            ray.shutdown()


def _tune_path(folder: StudyFolder) -> str:
    return f"{folder.location.rstrip('/')}/{TUNE_FOLDER}" if folder.is_uri else str(folder.path.resolve() / TUNE_FOLDER)


# The exit status of `mbpo-ray sweep` (docs/sweeps.md): every trial finished; some trial failed;
# none failed but some stopped before their budget (the time budget, ASHA, an interrupt).
EXIT_FINISHED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3


def trial_statuses(results) -> Dict[str, str]:
    """Tune's status of each trial (TERMINATED, ERROR, PENDING, ...) by its folder's name."""
    analysis = getattr(results, "_experiment_analysis", None)
    return {Path(t.path).name: t.status for t in getattr(analysis, "trials", None) or []}


def _summary(results, plans: Sequence[CellPlan], folder: StudyFolder, stream) -> int:
    """One line per trial, what continues the unfinished ones, and the exit status
    (``EXIT_FINISHED``, ``EXIT_FAILED`` or ``EXIT_STOPPED``)."""
    budgets = {p.cell.name: p.total_steps for p in plans}
    statuses = trial_statuses(results)
    rows, failed, stopped, interrupted, not_started = [], [], [], [], []
    for result in results:
        name = Path(result.path).name
        metrics = result.metrics or {}
        steps = metrics.get("env_steps", 0)
        if result.error is not None:
            failed.append(name)
            status = f"failed: {str(result.error).strip().splitlines()[-1][:160]}"
        elif "env_steps" not in metrics and statuses.get(name, "TERMINATED") == "TERMINATED":
            not_started.append(name)
            status = "not started: the study's time budget had passed"
        elif steps < budgets.get((result.config or {}).get("cell"), 0):
            if statuses.get(name, "TERMINATED") == "TERMINATED":
                stopped.append(name)
                status = "stopped before its budget (the study's time budget or ASHA)"
            else:
                interrupted.append(name)
                status = "interrupted"
        else:
            status = "finished"
        last = metrics.get("eval/return_mean")
        rows.append(f"  {name}: {steps} env steps, last eval return "
                    f"{'-' if last is None else f'{last:.1f}'}; {status}")
    stream.write(f"study folder {folder.location}: {len(rows)} trials, {len(failed)} failed, {len(stopped)} "
                 f"stopped before their budget, {len(interrupted)} interrupted"
                 + (f", {len(not_started)} not started" if not_started else "") + "\n" + "\n".join(sorted(rows)) + "\n")
    if failed or interrupted:
        stream.write(f"failed and interrupted trials continue from their checkpoints with: mbpo-ray sweep --resume "
                     f"{folder.location}\n")
    if stopped:
        where = (f"{folder.path / RUNS_FOLDER}/<trial>" if not folder.is_uri else
                 f"a folder made of {folder.location}/{TUNE_FOLDER}/<trial>/checkpoint_<newest>/ (checkpoint.pt; "
                 f"metrics-snapshot.jsonl and config-snapshot.yaml renamed to metrics.jsonl and config.yaml)")
        stream.write(f"--resume does not continue a trial that the time budget or ASHA stopped (Tune counts it as "
                     f"finished); to extend one: mbpo-ray train --resume {where}\n")
    if not_started:
        stream.write("trials that the time budget kept from starting hold nothing in this folder: run them in a "
                     "new study (a new --out), with a larger budget.time_s if need be\n")
    if failed:
        return EXIT_FAILED
    return EXIT_STOPPED if stopped or interrupted or not_started else EXIT_FINISHED
