"""A study as data: its keys and allowed values, the parsed ``Study``, its search ``Space``s and
its ``Cell``s; ``StudyError``, the one error of a study file that cannot run."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


from mbpo_ray.config.checks import Checker
from mbpo_ray.errors import ConfigError
from mbpo_ray.wandb_log import WandbOptions


TOP_KEYS = ("name", "description", "algorithms", "envs", "seeds", "seeds_per_trial", "budget", "overrides", "variants",
            "search", "samples", "scheduler", "max_concurrent_trials", "max_failures", "gpus_per_trial",
            "storage", "storage_shared", "wandb")
BUDGET_KEYS = ("env_steps", "time_s")
OVERRIDE_KEYS = ("all", "algorithms", "envs")
SCHEDULER_KEYS = ("type", "grace_period", "reduction_factor")
SCHEDULERS = ("none", "asha")
WANDB_KEYS = ("project", "entity", "group", "tags", "mode", "init_timeout")
SPACE_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
SPACE_FORMS = ("{grid: [v1, v2, ...]}, {choice: [v1, v2, ...]}, {uniform: [low, high]}, "
               "{loguniform: [low, high]} with 0 < low, {randint: [low, high]} (integers, high excluded)")
# Set by the trial's cell (algorithms, envs, seeds), never by an override; a variant may set algo.
AXIS_FIELDS = {"algo": "algorithms", "env_id": "envs", "seed": "seeds"}
STORAGE_SCHEMES = ("s3://", "gs://", "file://")
DEFAULT_STORAGE = "runs/sweeps"
DEFAULT_MAX_FAILURES = 2
# The trial process itself, in a Ray-runtime trial's placement group: it runs the loop and the
# evaluation episodes while its actors work (docs/sweeps.md, "Resources").
DRIVER_CPUS = 1.0
ASHA_METRIC = "eval/return_mean"
ASHA_TIME_ATTR = "env_steps"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class StudyError(ConfigError):
    """A study file that cannot run; the message starts with the key path."""


# the generic checks of a study file's values (shared with the config's), raising StudyError
check = Checker(StudyError)
fail = check.fail


# --- the study ----------------------------------------------------------------------------------

@dataclass
class Space:
    """One search space over one config field (Tune's grid_search, choice, uniform, loguniform,
    randint)."""

    kind: str
    values: Tuple[Any, ...]  # grid and choice: the values; the others: (low, high)

    def representatives(self) -> List[Any]:
        """Values that stand for the space in validation: every value of a grid or choice, the
        ends of a range (randint's upper end is excluded, so its last value)."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [low, high]

    def describe(self) -> str:
        return f"{self.kind} {list(self.values)}"

    def to_plain(self) -> Dict[str, Any]:
        return {self.kind: list(self.values)}


@dataclass
class Study:
    name: str
    envs: List[str]
    seeds: List[int]
    algorithms: List[str] = field(default_factory=list)
    seeds_per_trial: int = 1  # >1: a trial of mbpo or sac trains that many seeds in one process
    description: str = ""
    env_steps: Optional[int] = None
    time_budget_s: Optional[float] = None
    overrides_all: Dict[str, Any] = field(default_factory=dict)
    overrides_algorithms: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    overrides_envs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    search: Dict[str, Space] = field(default_factory=dict)
    samples: int = 1
    scheduler: str = "none"
    grace_period: Optional[int] = None
    reduction_factor: float = 3.0
    max_concurrent_trials: Optional[int] = None
    max_failures: int = DEFAULT_MAX_FAILURES
    gpus_per_trial: float = 0.0
    storage: str = DEFAULT_STORAGE
    storage_shared: bool = False  # the storage path is on a filesystem every node mounts (docs/clusters.md)
    wandb: WandbOptions = field(default_factory=WandbOptions)

    @property
    def searched(self) -> bool:
        """Whether one cell runs several trials (search spaces or samples): trial names then
        carry Tune's trial index."""
        return bool(self.search) or self.samples > 1

    def grid_points(self) -> List[Dict[str, Any]]:
        """Every combination of the grid spaces' values (one empty dict without grids)."""
        grids = [(k, s.values) for k, s in self.search.items() if s.kind == "grid"]
        return [dict(zip([k for k, _ in grids], combo)) for combo in itertools.product(*[v for _, v in grids])]

    def trials_per_cell(self) -> int:
        return len(self.grid_points()) * self.samples

    def to_plain(self) -> Dict[str, Any]:
        """The study as a study file (every key resolved): the copy a study folder keeps."""
        out: Dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.algorithms:
            out["algorithms"] = list(self.algorithms)
        out.update({"envs": list(self.envs), "seeds": list(self.seeds), "seeds_per_trial": self.seeds_per_trial})
        budget = {k: v for k, v in (("env_steps", self.env_steps), ("time_s", self.time_budget_s)) if v is not None}
        if budget:
            out["budget"] = budget
        overrides = {"all": _plain(self.overrides_all), "algorithms": _plain(self.overrides_algorithms),
                     "envs": _plain(self.overrides_envs)}
        out["overrides"] = {k: v for k, v in overrides.items() if v}
        if self.variants:
            out["variants"] = _plain(self.variants)
        if self.search:
            out["search"] = {k: s.to_plain() for k, s in self.search.items()}
        out["samples"] = self.samples
        out["scheduler"] = ({"type": "none"} if self.scheduler == "none" else
                            {"type": "asha", "grace_period": self.grace_period,
                             "reduction_factor": self.reduction_factor})
        out["max_concurrent_trials"] = self.max_concurrent_trials
        out["max_failures"] = self.max_failures
        out["gpus_per_trial"] = self.gpus_per_trial
        out["storage"] = self.storage
        if self.storage_shared:
            out["storage_shared"] = True
        out["wandb"] = self.wandb.to_plain()
        return out


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class Cell:
    """One (algorithm, env, seed, variant) of a study, or with ``seeds_per_trial`` one
    (algorithm, env, seeds, variant) whose trials train those seeds as a seed group: the trials
    of a cell differ only in the search spaces' values."""

    name: str
    algo: str
    env: str
    seeds: List[int]  # one seed, or the seeds a trial packs
    variant: Optional[str]
    overrides: Dict[str, Any]  # dotted field -> value, every layer but the search applied
    origin: Dict[str, str]  # dotted field -> the study key path that set it (error messages)
    gpus_per_trial: float = 0.0

    def to_plain(self) -> Dict[str, Any]:
        """What a Tune trial needs of its cell (the sweep's settings hold it by name)."""
        return {"name": self.name, "algo": self.algo, "env": self.env, "seeds": list(self.seeds),
                "variant": self.variant, "overrides": _plain(self.overrides),
                "gpus_per_trial": self.gpus_per_trial}
