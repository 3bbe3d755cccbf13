"""`mbpo-ray sweep`: a validated study run as Ray Tune trials, or a killed one continued.

The study folder (``--out``, else ``storage/name``)::

    STUDY/study.yaml        the study as run (every key resolved; --resume reads it)
    STUDY/sweep.json        the study's id (W&B run ids) and when it started
    STUDY/trials.txt        the trial table (as --dry-run prints it)
    STUDY/runs/<trial>/     one ordinary run directory per trial (config.yaml, metrics.jsonl,
                            checkpoint.pt, curve.png, wandb/)
    STUDY/tune/             Tune's experiment: its state, each trial's results and its last
                            checkpoints (Tune restores from these)

With an ``s3://`` or ``gs://`` storage the run directories are the trials' working
directories, uploaded by Tune into ``STUDY/tune/<trial>/`` (docs/sweeps.md, "Storage").
"""
from __future__ import annotations

import functools
import json
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mbpo_ray.errors import ConfigError
from mbpo_ray.tune.study import (ASHA_METRIC, ASHA_TIME_ATTR, STORAGE_SCHEMES, CellPlan, Study, StudyError,
                                 dump_study, load_study, parse_yaml, resource_fields, study_from_yaml, total,
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
            tmp = self.path / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path / name)
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


def _fmt(resources: Dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


def check_cluster(plans: Sequence[CellPlan], cluster: Dict[str, float], nodes: List[Dict[str, float]]) -> None:
    """A trial whose placement group could never be placed is an error now, not a trial that
    waits forever: its total must fit the cluster and each bundle must fit one node."""
    for plan in plans:
        need = total(plan.bundles)
        short = {k: v for k, v in need.items() if v > cluster.get(k, 0.0) + 1e-9}
        if short:
            name = next(iter(short))
            raise StudyError(
                f"{_origin(plan, name)}: trial {plan.cell.name} needs {_fmt(need)} (its placement group: "
                f"{len(plan.bundles)} bundle{'s' if len(plan.bundles) > 1 else ''}) but the Ray cluster has "
                f"{_fmt({k: cluster.get(k, 0.0) for k in short})}: it could never start. Lower "
                f"{resource_fields(plan.runtime, name)}, or join a cluster that has them (--address)")
        for bundle in plan.bundles:
            if not any(all(v <= node.get(k, 0.0) + 1e-9 for k, v in bundle.items()) for node in nodes):
                name = next(iter(bundle))
                raise StudyError(
                    f"{_origin(plan, name)}: trial {plan.cell.name} has a bundle of {_fmt(bundle)} that no "
                    f"node of the Ray cluster can hold (nodes: "
                    f"{'; '.join(_fmt({k: v for k, v in n.items() if k in ('CPU', 'GPU')}) for n in nodes)}). "
                    f"Lower {resource_fields(plan.runtime, name)}")


def _origin(plan: CellPlan, resource: str) -> str:
    """The study key that set the resource (else the fields that would)."""
    if plan.runtime != "ray":
        if resource == "GPU":
            return "gpus_per_trial"
        return plan.cell.origin.get("torch_threads", "torch_threads")
    keys = [k for k in plan.cell.origin if k.startswith("ray.") and
            (k.endswith("_gpus") if resource == "GPU" else not k.endswith("_gpus"))]
    return plan.cell.origin[keys[0]] if keys else resource_fields("ray", resource)


def cluster_state() -> Tuple[Dict[str, float], List[Dict[str, float]]]:
    import ray

    return dict(ray.cluster_resources()), [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


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

    from mbpo_ray.tune.trainable import run_trial, trial_resources

    return tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                               functools.partial(trial_resources, cells=settings["cells"]))


def make_tuner(study: Study, plans: Sequence[CellPlan], folder: StudyFolder, settings: Dict[str, Any],
               callbacks: Sequence[Any], verbose: int):
    from ray import tune

    scheduler = None
    if study.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        longest = max(p.total_steps for p in plans)
        shortest_epoch = min(p.cfg.mbpo.epoch_length for p in plans)
        scheduler = ASHAScheduler(time_attr=ASHA_TIME_ATTR, metric=ASHA_METRIC, mode="max", max_t=longest,
                                  grace_period=study.grace_period or shortest_epoch,
                                  reduction_factor=study.reduction_factor)
    namer = functools.partial(trial_name, indexed=study.searched)
    return tune.Tuner(
        trainable(settings),
        param_space=param_space(study, plans),
        tune_config=tune.TuneConfig(num_samples=study.samples, max_concurrent_trials=study.max_concurrent_trials,
                                    time_budget_s=study.time_budget_s, scheduler=scheduler,
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
    return {"runs_dir": folder.runs_dir, "study": study.name, "study_id": study_id,
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
        check_cluster(plans, *cluster_state())
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


def _summary(results, plans: Sequence[CellPlan], folder: StudyFolder, stream) -> int:
    """One line per trial; the exit status (1 when a trial failed)."""
    budgets = {p.cell.name: p.total_steps for p in plans}
    rows, failed, unfinished = [], 0, 0
    for result in results:
        name = Path(result.path).name
        metrics = result.metrics or {}
        steps = metrics.get("env_steps", 0)
        if result.error is not None:
            failed += 1
            status = f"failed: {str(result.error).strip().splitlines()[-1][:160]}"
        elif steps < budgets.get((result.config or {}).get("cell"), 0):
            unfinished += 1
            status = "stopped early (scheduler, time budget or interrupt)"
        else:
            status = "finished"
        last = metrics.get("eval/return_mean")
        rows.append(f"  {name}: {steps} env steps, last eval return "
                    f"{'-' if last is None else f'{last:.1f}'}; {status}")
    stream.write(f"study folder {folder.location}: {len(rows)} trials, {failed} failed, {unfinished} stopped "
                 f"early\n" + "\n".join(sorted(rows)) + "\n")
    if failed or unfinished:
        stream.write(f"a trial that failed or was interrupted continues with: mbpo-ray sweep --resume "
                     f"{folder.location}\n")
    return 1 if failed else 0
