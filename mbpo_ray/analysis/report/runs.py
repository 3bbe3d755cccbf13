"""The runs a report compares: finding run directories under the given folders, reading each
run's config and metrics (an unreadable metrics line is an error naming file and line), the
curve of a run on the report's x axis, and its group."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from mbpo_ray.analysis.report.options import ReportError, ReportOptions
from mbpo_ray.config import TrainConfig, to_dict
from mbpo_ray.errors import RunDirError
from mbpo_ray.run_dir import RunDirectory


RETURN_KEY = "eval/return_mean"
AXIS_LABELS = {
    "env_steps": "env steps (uniform-random warm-up included)",
    "learning_steps": "learning steps (env steps after the random warm-up: the MBPO paper's axis)",
    "wall_seconds": "wall-clock seconds of the run (its processes' time, summed over resumes; a packed trial's for all its seeds)",
}
WALL_KEY = "perf/wall_seconds"
# Config fields that change where or how fast a run goes, not what it computes: runs of one group
# may differ in these without a note (the seed is what a group averages over).
NON_EXPERIMENT_FIELDS = ("seed", "device", "torch_threads", "checkpoint_every_epochs", "keep_checkpoints_every",
                         "ray.address", "ray.object_store_mb", "ray.worker_node_resource", "ray.learner_node_resource",
                         "ray.max_actor_restarts")
PROFILE_CHUNK = 1000  # bootstrap replicates per chunk of the performance-profile bands (memory)


# --- reading ----------------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    env: str  # env_id, followed by its env_kwargs when it has any
    env_id: str
    algo: str
    seed: int
    total_steps: int
    config: Dict[str, Any]
    records: List[Dict[str, Any]]
    has_checkpoint: bool
    group: str = ""
    problem: Optional[str] = None  # why the run is left out of the statistics
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    final: float = math.nan

    @property
    def steps_done(self) -> int:
        return self.records[-1]["env_steps"] if self.records else 0

    @property
    def used(self) -> bool:
        return self.problem is None


def _looks_like_run_config(path: Path) -> bool:
    """A config.yaml without metrics.jsonl counts as a run that has written no record yet when it is
    a mapping with env_id and algo (other tools' config.yaml files are not)."""
    try:
        flat = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(flat, dict) and "env_id" in flat and "algo" in flat


# Folders inside a run directory that other tools write and that are never run directories
# themselves: W&B's (an online run keeps the run's config in wandb/run-*/files/config.yaml).
NOT_RUN_FOLDERS = ("wandb",)


def find_run_dirs(dirs: Sequence[Path]) -> List[Path]:
    """Every run directory under each of ``dirs`` (a DIR that is one counts too), each once;
    nothing inside a ``NOT_RUN_FOLDERS`` folder."""
    found: Dict[Path, None] = {}
    for top in dirs:
        for config in sorted(Path(top).rglob("config.yaml")):
            folder = config.parent
            if any(part in NOT_RUN_FOLDERS for part in folder.relative_to(top).parts):
                continue
            if (folder / "metrics.jsonl").is_file() or _looks_like_run_config(config):
                found.setdefault(folder.resolve(), None)
    return list(found)


def _line_numbers(path: Path) -> List[int]:
    """The line number of each record (non-blank line) of a metrics file."""
    with open(path) as f:
        return [i for i, line in enumerate(f, 1) if line.strip()]


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_records(run_dir: RunDirectory) -> List[Dict[str, Any]]:
    """The records of a metrics file, checked: each a JSON object with an integer env_steps that
    grows from record to record, and a finite eval/return_mean where it has one. ReportError
    naming the file and line otherwise."""
    path = run_dir.metrics_path
    try:
        records = run_dir.read_metrics()
    except json.JSONDecodeError:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ReportError(f"{path}: line {number} is not valid JSON ({exc.msg}); "
                                          f"the metrics file is corrupt") from None
        raise ReportError(f"{path}: not valid JSON; the metrics file is corrupt") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    lines = _line_numbers(path) if records else []
    previous = -1
    for record, number in zip(records, lines):
        where = f"{path}: line {number}"
        if not isinstance(record, dict):
            raise ReportError(f"{where} is not a JSON object; the metrics file is corrupt")
        steps = record.get("env_steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ReportError(f"{where} has no env_steps count (a whole number >= 0); the metrics file is corrupt")
        if steps <= previous:
            raise ReportError(f"{where}: env_steps {steps} does not follow {previous} (records out of order "
                              f"or repeated); the metrics file is corrupt")
        previous = steps
        if RETURN_KEY in record and not _finite_number(record[RETURN_KEY]):
            raise ReportError(f"{where}: {RETURN_KEY} is {record[RETURN_KEY]!r}, not a finite number; "
                              f"the metrics file is corrupt")
    return records


@functools.lru_cache(maxsize=1)
def _default_fields() -> Dict[str, Any]:
    return to_dict(TrainConfig())


def load_run(path: Path) -> Run:
    run_dir = RunDirectory(path)
    try:
        cfg = run_dir.load_config()  # checks every field
    except RunDirError as exc:
        raise ReportError(str(exc)) from None
    # The fields as config.yaml has them (flat), a field it lacks (written before the field existed)
    # at its default, as load_config reads it: cheaper than to_dict(cfg) once per run.
    flat = {**_default_fields(), **yaml.safe_load(run_dir.config_path.read_text())}
    kwargs = getattr(cfg, "env_kwargs", None) or {}
    env = cfg.env_id + (" " + json.dumps(kwargs, sort_keys=True) if kwargs else "")
    return Run(path=Path(path), env=env, env_id=cfg.env_id, algo=cfg.algo, seed=cfg.seed,
               total_steps=cfg.total_steps, config=flat, records=read_records(run_dir),
               has_checkpoint=run_dir.checkpoint_path.is_file())


def _curve(run: Run, x_axis: str) -> Tuple[np.ndarray, np.ndarray]:
    """The run's evaluations against the chosen axis; of several records at one x (the warm-up's
    records all have learning_steps 0) the last one stands."""
    points: Dict[float, float] = {}
    wall_offset, last_wall = 0.0, 0.0
    for record in run.records:
        if RETURN_KEY not in record:
            continue
        if x_axis == "wall_seconds":
            wall = record.get(WALL_KEY)
            if not _finite_number(wall) or wall < 0:
                raise ReportError(f"{run.path / 'metrics.jsonl'}: a record at env_steps {record['env_steps']} has no "
                                  f"{WALL_KEY} (records written before that key existed); use --x env_steps")
            # each process of a run counts its wall time from its own start: a resumed run's
            # seconds go on from the last record before the resume
            if wall < last_wall:
                wall_offset += last_wall
            last_wall = wall
            x: Any = wall_offset + wall
        else:
            x = record.get(x_axis)
            if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                raise ReportError(f"{run.path / 'metrics.jsonl'}: a record at env_steps {record['env_steps']} has no "
                                  f"{x_axis} (records written before that key existed); use --x env_steps")
        points[float(x)] = float(record[RETURN_KEY])
    xs = sorted(points)
    return np.array(xs, dtype=float), np.array([points[x] for x in xs], dtype=float)


def prepare_run(run: Run, options: ReportOptions) -> None:
    """Decide whether the run is used; for a used run, its curve and final score."""
    if not run.records:
        run.problem = f"no records yet (0 of {run.total_steps:,} env steps)"
    elif run.steps_done < run.total_steps:
        run.problem = f"stopped at {run.steps_done:,} of {run.total_steps:,} env steps"
    elif not any(RETURN_KEY in r for r in run.records):
        run.problem = f"no {RETURN_KEY} in its records"
    if run.problem is None:
        run.x, run.y = _curve(run, options.x_axis)
        evals = [r[RETURN_KEY] for r in run.records if RETURN_KEY in r]
        run.final = float(np.mean(evals[-options.final_window:]))


def group_label(run: Run, group_by: Sequence[str]) -> str:
    """``algo[-label] [field=value ...]``: the label is a study's variant (docs/sweeps.md)."""
    parts = [f"{name}={_format_value(run.config.get(name))}" for name in group_by]
    label = run.config.get("label")
    return " ".join([run.algo + (f"-{label}" if label else "")] + parts)


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return "null" if value is None else str(value)
