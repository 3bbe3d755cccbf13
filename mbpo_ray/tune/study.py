"""The study file of `mbpo-ray sweep`: its schema, its validation, its trials and what each
trial asks of the cluster (docs/sweeps.md is the reference of every key).

Everything here runs before Ray, torch or anything on disk is touched: a study with an unknown
key, algorithm or env, a malformed search space, a field that does not exist or a value that a
trial's config would refuse is a ``StudyError`` that names the key path
(``search.model.hidden_width``) and what is allowed. A trial's config is an ordinary
``TrainConfig`` built with the config package's presets and dotted overrides; nothing here
knows a field by name except the ones a study sets for every trial (``algo``, ``env_id``,
``seed``, ``total_steps``, ``torch_threads``, ``runtime``, ``device``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from mbpo_ray.config import ALGOS, TrainConfig, check_env_id, field_names, make_config, set_field
from mbpo_ray.config.validate import SEED_LIMIT
from mbpo_ray.errors import ConfigError
from mbpo_ray.runtime.ray.capacity import total  # noqa: F401  (a trial's resources: the sweep and tests use it from here)
from mbpo_ray.seeds import GROUP_ALGOS, MAX_SEEDS, check_group_config, format_seeds
from mbpo_ray.wandb_log import WANDB_MODES, WandbOptions

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
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class StudyError(ConfigError):
    """A study file that cannot run; the message starts with the key path."""


def fail(path: str, message: str) -> StudyError:
    return StudyError(f"{path}: {message}" if path else message)


# --- reading ------------------------------------------------------------------------------------

class _StudyLoader(yaml.SafeLoader):
    """YAML 1.1 reads 3e-4 (no decimal point) as a string; a study reads it as a number, as
    `--set` does."""


_StudyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def _mapping_without_duplicates(loader: _StudyLoader, node: yaml.MappingNode, deep: bool = False):
    """PyYAML keeps the last of two equal keys; a study refuses them (one would be lost)."""
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StudyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise StudyError(f"study file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"study file {path}: cannot read it ({exc})") from None
    return parse_yaml(text, f"study file {path}")


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StudyLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise StudyError(f"{source}{line} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


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


# --- parsing -------------------------------------------------------------------------------------

def load_study(path, overrides: Optional[Dict[str, Any]] = None) -> Study:
    """Read, parse and validate the study file at ``path``; ``overrides`` replace keys of its
    wandb section (the CLI's W&B flags) before validation."""
    return study_from_yaml(read_yaml(Path(path)), f"study file {path}", Path(path).stem, overrides)


def study_from_yaml(raw: Any, source: str, default_name: str,
                    overrides: Optional[Dict[str, Any]] = None) -> Study:
    """The validated study of a parsed YAML document (``source`` names it in errors)."""
    if raw is None:
        raise StudyError(f"{source} is empty; it needs at least algorithms, envs and seeds")
    if not isinstance(raw, dict):
        raise StudyError(f"{source}: expected a mapping of keys ({', '.join(TOP_KEYS)}), "
                         f"got {type(raw).__name__}")
    study = parse_study(raw, default_name=default_name)
    for key, value in (overrides or {}).items():
        if key not in WANDB_KEYS:
            raise AssertionError(f"only the wandb keys can be overridden, not {key}")
        setattr(study.wandb, key, value)
    validate_study(study)
    return study


def parse_study(raw: Dict[str, Any], default_name: str = "study") -> Study:
    """The study of a parsed YAML mapping, checked key by key (``validate_study`` then checks
    every trial's config)."""
    _known_keys(raw, "", TOP_KEYS, "the study")
    name = _string(raw.get("name", default_name), "name")
    if not NAME_PATTERN.match(name):
        raise fail("name", f"{name!r} is not allowed: letters, digits, '_', '.' and '-', starting "
                           f"with a letter or digit (it names the study folder)")
    study = Study(name=name, envs=[], seeds=[])
    if raw.get("description") is not None:
        study.description = _string(raw["description"], "description")

    variants = _mapping(raw.get("variants", {}), "variants")
    for vname, spec in variants.items():
        path = f"variants.{vname}"
        if not isinstance(vname, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.]*$", vname):
            raise fail(path, "a variant name uses letters, digits, '_' and '.' (it is part of trial names)")
        study.variants[vname] = _fields(spec if spec is not None else {}, path, allow_algo=True)

    algorithms = raw.get("algorithms")
    if algorithms is None:
        if not study.variants or any("algo" not in v for v in study.variants.values()):
            raise fail("algorithms", f"required (a list of: {', '.join(ALGOS)}), unless every "
                                     f"variant sets algo")
    else:
        study.algorithms = _unique_list(algorithms, "algorithms", lambda v, p: _choice(v, p, ALGOS, "algorithm"))

    study.envs = _unique_list(_required(raw, "envs"), "envs", _env_id)
    study.seeds = _seeds(_required(raw, "seeds"))
    if raw.get("seeds_per_trial") is not None:
        study.seeds_per_trial = _integer(raw["seeds_per_trial"], "seeds_per_trial", minimum=1)
        if study.seeds_per_trial > MAX_SEEDS:
            raise fail("seeds_per_trial", f"{study.seeds_per_trial} is not allowed: 1 (one seed per trial) to "
                                          f"{MAX_SEEDS} (the largest seed group)")

    budget = _mapping(raw.get("budget", {}), "budget")
    _known_keys(budget, "budget", BUDGET_KEYS, "budget")
    if budget.get("env_steps") is not None:
        study.env_steps = _integer(budget["env_steps"], "budget.env_steps", minimum=1)
    if budget.get("time_s") is not None:
        study.time_budget_s = _number(budget["time_s"], "budget.time_s", positive=True)

    overrides = _mapping(raw.get("overrides", {}), "overrides")
    _known_keys(overrides, "overrides", OVERRIDE_KEYS, "overrides")
    study.overrides_all = _fields(overrides.get("all") or {}, "overrides.all")
    per_algo = _mapping(overrides.get("algorithms") or {}, "overrides.algorithms")
    allowed_algos = sorted(set(study.algorithms) | {v["algo"] for v in study.variants.values() if "algo" in v},
                           key=ALGOS.index)
    for algo, spec in per_algo.items():
        _choice(algo, f"overrides.algorithms.{algo}", allowed_algos, "algorithm of this study")
        study.overrides_algorithms[algo] = _fields(spec or {}, f"overrides.algorithms.{algo}")
    per_env = _mapping(overrides.get("envs") or {}, "overrides.envs")
    for env, spec in per_env.items():
        _choice(env, f"overrides.envs.{env}", study.envs, "env of this study")
        study.overrides_envs[env] = _fields(spec or {}, f"overrides.envs.{env}")

    for key, spec in _flatten_sections(_mapping(raw.get("search", {}), "search"), "search").items():
        study.search[key] = space = _space(spec, f"search.{key}")
        _check_field(key, f"search.{key}", axis_ok=False)
        if space.kind in ("uniform", "loguniform"):
            low, high = space.values
            probe = low + (high - low) * 0.37  # not a whole number: the values Tune will draw
            try:
                set_field(TrainConfig(), key, probe)
            except ConfigError:
                raise fail(f"search.{key}", f"{space.kind} draws real numbers, which {key} does not take; "
                                            f"use randint, grid or choice") from None

    if raw.get("samples") is not None:
        study.samples = _integer(raw["samples"], "samples", minimum=1)
    _scheduler(raw.get("scheduler", "none"), study)
    if raw.get("max_concurrent_trials") is not None:
        study.max_concurrent_trials = _integer(raw["max_concurrent_trials"], "max_concurrent_trials", minimum=1)
    if raw.get("max_failures") is not None:
        study.max_failures = _integer(raw["max_failures"], "max_failures", minimum=0)
    if raw.get("gpus_per_trial") is not None:
        gpus = _number(raw["gpus_per_trial"], "gpus_per_trial")
        if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
            raise fail("gpus_per_trial", f"{gpus!r} is not allowed: 0 (no GPU), a fraction up to 1 "
                                         f"(trials share a GPU) or a whole number of GPUs")
        study.gpus_per_trial = gpus
    study.storage = _storage(raw.get("storage", DEFAULT_STORAGE))
    shared = raw.get("storage_shared", False)
    if not isinstance(shared, bool):
        raise fail("storage_shared", f"{shared!r} is not allowed: true (the storage path is mounted at the "
                                     f"same place on every node of the cluster) or false")
    study.storage_shared = shared
    study.wandb = _wandb(raw.get("wandb", {}))
    return study


def _required(raw: Dict[str, Any], key: str) -> Any:
    if raw.get(key) is None:
        raise fail(key, "required")
    return raw[key]


def _known_keys(mapping: Dict[str, Any], path: str, allowed: Sequence[str], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise fail(where, f"unknown key in {what}; allowed: {', '.join(allowed)}")


def _mapping(value: Any, path: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(path, f"expected a mapping, got {value!r}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise fail(path, f"expected a non-empty string, got {value!r}")
    return value


def _integer(value: Any, path: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise fail(path, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise fail(path, f"{value!r} is not allowed: at least {minimum}")
    return int(value)


def _number(value: Any, path: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(path, f"expected a number, got {value!r}")
    if positive and value <= 0:
        raise fail(path, f"{value!r} is not allowed: a positive number")
    return float(value)


def _choice(value: Any, path: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise fail(path, f"{value!r} is not an {what}; allowed: {', '.join(allowed) or 'none'}")
    return value


def _unique_list(value: Any, path: str, check) -> List[Any]:
    if not isinstance(value, list) or not value:
        raise fail(path, f"expected a non-empty list, got {value!r}")
    out = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
    for i, v in enumerate(out):
        if v in out[:i]:
            raise fail(f"{path}[{i}]", f"{v!r} is listed twice")
    return out


def _env_id(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise fail(path, f"expected an env id, got {value!r}")
    try:
        check_env_id(value)
    except ConfigError as exc:
        raise fail(path, str(exc)) from None
    return value


def _seeds(value: Any) -> List[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise fail("seeds", f"{value!r} is not allowed: a count of seeds (at least 1, for seeds "
                                f"0..N-1) or a list of seeds")
        return list(range(value))
    return _unique_list(value, "seeds", lambda v, p: _seed(v, p))


def _seed(value: Any, path: str) -> int:
    seed = _integer(value, path, minimum=0)
    if seed >= SEED_LIMIT:
        raise fail(path, f"{seed} is not allowed: a seed below 2**32 = {SEED_LIMIT}")
    return seed


def _sections() -> Tuple[str, ...]:
    cfg = TrainConfig()
    return tuple(f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name)))


def _flatten_sections(mapping: Dict[str, Any], path: str) -> Dict[str, Any]:
    """``{model: {hidden_width: 64}}`` and ``{model.hidden_width: 64}`` alike, as dotted names;
    only a config section's name opens a nested mapping (a field's value may be a mapping)."""
    out: Dict[str, Any] = {}
    sections = _sections()
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise fail(f"{path}.{key}", "a config field name must be a string")
        if key in sections and isinstance(value, dict) and not _is_space(value):
            for sub, inner in value.items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
    return out


def _is_space(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_KINDS


def _check_field(key: str, path: str, axis_ok: bool, value: Any = None, check_value: bool = False) -> None:
    """``key`` names a config field a study may set (and ``value`` fits its type)."""
    if key in AXIS_FIELDS and not (axis_ok and key == "algo"):
        raise fail(path, f"{key} is set by the study's {AXIS_FIELDS[key]} list, not by an override"
                         + (" (a variant may set algo)" if key == "algo" else ""))
    scratch = TrainConfig()
    try:
        if check_value:
            set_field(scratch, key, value)
        elif key not in field_names(scratch):
            set_field(scratch, key, None)  # raises the config's "unknown field" error
    except ConfigError as exc:
        raise fail(path, str(exc)) from None


def _fields(spec: Any, path: str, allow_algo: bool = False) -> Dict[str, Any]:
    """An override mapping (flat dotted names or nested sections), each field checked."""
    out = _flatten_sections(_mapping(spec, path), path)
    for key, value in out.items():
        where = f"{path}.{key}"
        if _is_space(value):
            raise fail(where, "a search space belongs under search:, not in overrides or variants")
        _check_field(key, where, axis_ok=allow_algo, value=value, check_value=True)
        if key == "algo":
            _choice(value, where, ALGOS, "algorithm")
    return out


def _space(spec: Any, path: str) -> Space:
    if not _is_space(spec):
        raise fail(path, f"{spec!r} is not a search space; allowed: {SPACE_FORMS}")
    kind, values = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise fail(path, f"{kind} needs a non-empty list of values, got {values!r}")
        return Space(kind, tuple(values))
    if (not isinstance(values, list) or len(values) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)):
        raise fail(path, f"{kind} needs [low, high] (two numbers), got {values!r}")
    low, high = values
    if not low < high:
        raise fail(path, f"{kind} [{low}, {high}]: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise fail(path, f"loguniform [{low}, {high}]: low must be positive")
    if kind == "randint" and (int(low) != low or int(high) != high):
        raise fail(path, f"randint [{low}, {high}]: low and high must be integers")
    if kind == "randint":
        low, high = int(low), int(high)
    return Space(kind, (low, high))


def _scheduler(value: Any, study: Study) -> None:
    if isinstance(value, str):
        value = {"type": value}
    spec = _mapping(value, "scheduler")
    _known_keys(spec, "scheduler", SCHEDULER_KEYS, "scheduler")
    study.scheduler = _choice(spec.get("type", "none"), "scheduler.type", SCHEDULERS, "allowed scheduler")
    if study.scheduler == "none":
        for key in ("grace_period", "reduction_factor"):
            if key in spec:
                raise fail(f"scheduler.{key}", "only with scheduler type asha")
        return
    if spec.get("grace_period") is not None:
        study.grace_period = _integer(spec["grace_period"], "scheduler.grace_period", minimum=1)
    if spec.get("reduction_factor") is not None:
        factor = _number(spec["reduction_factor"], "scheduler.reduction_factor")
        if factor <= 1:
            raise fail("scheduler.reduction_factor", f"{factor!r} is not allowed: a number above 1")
        study.reduction_factor = factor


def _storage(value: Any) -> str:
    storage = _string(value, "storage")
    if "://" in storage and not storage.startswith(STORAGE_SCHEMES):
        raise fail("storage", f"{storage!r} is not allowed: a local or NFS path, or a URI starting with "
                              f"{', '.join(STORAGE_SCHEMES)}")
    return storage


def _wandb(value: Any) -> WandbOptions:
    if value is None or value is False:
        return WandbOptions(mode="disabled")
    spec = _mapping(value, "wandb")
    _known_keys(spec, "wandb", WANDB_KEYS, "the wandb section (the API key comes from WANDB_API_KEY only)")
    options = WandbOptions()
    if spec.get("project") is not None:
        options.project = _string(spec["project"], "wandb.project")
    for key in ("entity", "group"):
        if spec.get(key) is not None:
            setattr(options, key, _string(spec[key], f"wandb.{key}"))
    if spec.get("tags") is not None:
        tags = spec["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise fail("wandb.tags", f"expected a list of strings, got {tags!r}")
        options.tags = tuple(tags)
    if spec.get("mode") is not None:
        options.mode = _choice(spec["mode"], "wandb.mode", WANDB_MODES, "allowed mode")
    if spec.get("init_timeout") is not None:
        options.init_timeout = _number(spec["init_timeout"], "wandb.init_timeout", positive=True)
    return options


# --- trials --------------------------------------------------------------------------------------

# What a trial's name may hold: it is a folder name on every storage (Ray refuses a trial
# folder with '/') and part of W&B run names.
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def name_part(env: str) -> str:
    """An env id as part of a trial name: kept as it is when it holds only letters, digits, '.',
    '_' and '-'; else each other character becomes '_' and a short hash of the id follows, so
    that two ids never share a name (``dm_control/cartpole-swingup-v0`` ->
    ``dm_control_cartpole-swingup-v0-<6 hex>``). The id itself is kept verbatim in the trial's
    config and in the report."""
    if not _UNSAFE_IN_NAME.search(env):
        return env
    return f"{_UNSAFE_IN_NAME.sub('_', env)}-{hashlib.sha1(env.encode()).hexdigest()[:6]}"


def cell_name(algo: str, env: str, seeds: Sequence[int], variant: Optional[str]) -> str:
    """``algo-env-seedN`` (or ``algo-env-seedsA-B`` for packed seeds, ``format_seeds`` with '_'
    for ','), with the variant after the algorithm and the env as ``name_part`` gives it: the
    trial's folder, its Tune trial name and its W&B run name."""
    where = f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + format_seeds(list(seeds)).replace(",", "_")
    return f"{algo}{'-' + variant if variant else ''}-{name_part(env)}-{where}"


def packs(study: Study, algo: str, runtime: Any) -> List[List[int]]:
    """The study's seeds as the trials of one (algorithm, env, variant) take them: in runs of
    ``seeds_per_trial`` in the study's order where the trial can be a seed group (mbpo or sac
    on the local runtime), else one each."""
    size = study.seeds_per_trial if algo in GROUP_ALGOS and runtime == "local" else 1
    return [study.seeds[i:i + size] for i in range(0, len(study.seeds), size)]


def cells(study: Study) -> List[Cell]:
    """Every (algorithm, env, seed or packed seeds, variant) of the study, with its overrides in
    the order they apply: the sweep default torch_threads=1, budget.env_steps, overrides.all,
    overrides.envs[env], overrides.algorithms[algo], the variant (docs/sweeps.md)."""
    variants: List[Tuple[Optional[str], Dict[str, Any]]] = list(study.variants.items()) or [(None, {})]
    runtime_default = TrainConfig().runtime  # no preset sets it
    out = []
    for env in study.envs:
        for vname, vspec in variants:
            algos = [vspec["algo"]] if "algo" in vspec else study.algorithms
            for algo in algos:
                overrides: Dict[str, Any] = {}
                origin: Dict[str, str] = {}
                layers = [({"torch_threads": 1}, "(the sweep default torch_threads: 1)"),
                          ({"total_steps": study.env_steps} if study.env_steps else {}, "budget"),
                          (study.overrides_all, "overrides.all"),
                          (study.overrides_envs.get(env, {}), f"overrides.envs.{env}"),
                          (study.overrides_algorithms.get(algo, {}), f"overrides.algorithms.{algo}"),
                          ({k: v for k, v in vspec.items() if k != "algo"}, f"variants.{vname}")]
                for layer, path in layers:
                    for key, value in layer.items():
                        overrides[key] = value
                        origin[key] = "budget.env_steps" if path == "budget" else (
                            path if path.startswith("(") else f"{path}.{key}")
                if vname:  # the report groups a study's runs by algorithm and label
                    overrides["label"] = vname
                for seeds in packs(study, algo, overrides.get("runtime", runtime_default)):
                    out.append(Cell(cell_name(algo, env, seeds, vname), algo, env, seeds, vname,
                                    {**overrides, "algo": algo, "seed": seeds[0]}, dict(origin),
                                    study.gpus_per_trial))
    return out


def trial_config(cell: Dict[str, Any], search: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The validated TrainConfig of one trial: the env's preset, the algorithm's preset, the
    cell's overrides, then the search spaces' values (``cell`` is ``Cell.to_plain()``)."""
    return make_config(cell["env"], {**cell["overrides"], **(search or {})})


def trial_bundles(cfg: TrainConfig, gpus_per_trial: float) -> List[Dict[str, float]]:
    """The placement-group bundles of one trial. Local runtime: one bundle, the trial process,
    with ``torch_threads`` CPUs and ``gpus_per_trial`` GPUs. Ray runtime: the trial process
    (the run's driver, ``DRIVER_CPUS``), then one bundle per actor of its group, so that the
    whole group is reserved before the trial starts (docs/sweeps.md, "Resources")."""
    if cfg.runtime == "ray":
        from mbpo_ray.runtime.ray.cluster import actor_bundles  # the group's one description

        return [{"CPU": DRIVER_CPUS}] + actor_bundles(cfg)
    bundle = {"CPU": float(cfg.torch_threads or 1)}
    if gpus_per_trial > 0:
        bundle["GPU"] = float(gpus_per_trial)
    return [bundle]


@dataclass
class CellPlan:
    """A validated cell: its trials' largest resource needs (search spaces may change them)."""

    cell: Cell
    bundles: List[Dict[str, float]]  # the bundles of its largest trial
    cfg: TrainConfig  # the config of its first trial

    @property
    def runtime(self) -> str:
        return self.cfg.runtime

    @property
    def total_steps(self) -> int:
        return self.cfg.total_steps


def validation_points(study: Study) -> List[Tuple[Dict[str, Any], str]]:
    """Search values that stand for the whole search: each grid combination (random spaces at
    their first representative), and each representative of each random space (grids at their
    first combination). Each with the study key path to blame for an error."""
    randoms = {k: s for k, s in study.search.items() if s.kind != "grid"}
    first_random = {k: s.representatives()[0] for k, s in randoms.items()}
    grid = study.grid_points()
    points = [({**g, **first_random}, "search") for g in grid]
    for key, space in randoms.items():
        for value in space.representatives():
            points.append(({**grid[0], **first_random, key: value}, f"search.{key}"))
    return points


def _blame(exc: ConfigError, cell: Cell, search: Dict[str, Any], where: str) -> StudyError:
    """The study key path behind a config error: the search space or override that set the
    field the message starts with, else the cell."""
    message = str(exc)
    named = re.match(r"^([A-Za-z_][\w.]*)(=|:| )", message)
    field_name = named.group(1) if named else None
    if field_name in search:
        return fail(f"search.{field_name}", f"value {search[field_name]!r}: {message}")
    if field_name in cell.origin and not cell.origin[field_name].startswith("("):
        return fail(cell.origin[field_name], f"{message} (trial {cell.name})")
    if where.startswith("search."):
        key = where[len("search."):]
        return fail(where, f"value {search.get(key)!r}: {message} (trial {cell.name})")
    return fail(f"trial {cell.name}", message)


def validate_study(study: Study) -> List[CellPlan]:
    """Build every trial's config (each search representative) and validate it; add the sweep's
    own rules (devices, GPUs per trial, ASHA's grace period). Returns the cells with their
    largest resource needs."""
    plans = []
    points = validation_points(study)
    for cell in cells(study):
        largest: Optional[List[Dict[str, float]]] = None
        first: Optional[TrainConfig] = None
        for search, where in points:
            try:
                cfg = trial_config(cell.to_plain(), search)
            except ConfigError as exc:
                raise _blame(exc, cell, search, where) from None
            _check_devices(cfg, study, cell)
            if len(cell.seeds) > 1:
                try:
                    check_group_config(cfg)
                except ConfigError as exc:
                    raise fail("seeds_per_trial", f"{study.seeds_per_trial} packs the seeds of trial "
                                                  f"{cell.name}, but {exc}") from None
            first = first or cfg
            bundles = trial_bundles(cfg, study.gpus_per_trial)
            if largest is None or _bigger(total(bundles), total(largest)):
                largest = bundles
        plans.append(CellPlan(cell, largest, first))
    if study.scheduler == "asha":
        longest = max(p.total_steps for p in plans)
        if study.grace_period is not None and study.grace_period > longest:
            raise fail("scheduler.grace_period", f"{study.grace_period} is not allowed: at most the "
                                                 f"longest trial's total_steps ({longest}); ASHA counts env steps")
    return plans


def _bigger(a: Dict[str, float], b: Dict[str, float]) -> bool:
    return (a.get("GPU", 0), a.get("CPU", 0)) > (b.get("GPU", 0), b.get("CPU", 0))


def _check_devices(cfg: TrainConfig, study: Study, cell: Cell) -> None:
    """In a sweep Ray assigns GPUs: a trial names no GPU index, and asks for the GPUs it uses."""
    device_path = cell.origin.get("device", "overrides.all.device")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise fail(device_path, f"device={cfg.device!r} is not allowed in a sweep: Ray assigns GPUs to "
                                f"trials; use auto, cpu or cuda (trial {cell.name})")
    if cfg.runtime == "ray":
        if study.gpus_per_trial > 0:
            raise fail("gpus_per_trial", f"{study.gpus_per_trial!r} is not allowed for runtime=ray trials "
                                         f"(trial {cell.name}): their actors ask for GPUs with ray.*_gpus; "
                                         f"set gpus_per_trial: 0")
        return
    if cfg.device == "cuda" and study.gpus_per_trial <= 0:
        raise fail("gpus_per_trial", f"0 is not allowed with device=cuda (trial {cell.name}): a trial gets a "
                                     f"GPU only by asking for one; set gpus_per_trial above 0, or device auto/cpu")
    if cfg.device == "cpu" and study.gpus_per_trial > 0:
        raise fail("gpus_per_trial", f"{study.gpus_per_trial!r} is not allowed with device=cpu (trial "
                                     f"{cell.name}): set it to 0, or use device auto or cuda")


def resource_fields(runtime: str, resource: str) -> str:
    """The study keys that set a trial's need of ``resource`` (for error messages)."""
    if runtime == "ray":
        return {"CPU": "ray.*_cpus, ray.num_collectors, ray.num_rollout_workers",
                "GPU": "ray.*_gpus"}.get(resource, "ray.worker_node_resource, ray.learner_node_resource")
    return {"CPU": "torch_threads", "GPU": "gpus_per_trial"}.get(resource, resource)


# --- the trial table (--dry-run) -----------------------------------------------------------------

def _amount(value: float) -> str:
    return f"{value:g}"


def trial_table(study: Study, plans: List[CellPlan], folder: str) -> str:
    """The table `--dry-run` prints and the study folder keeps: one row per cell with its
    trials and resources, then the totals."""
    per_cell = study.trials_per_cell()
    n_trials = per_cell * len(plans)
    head = ["trial", "algo", "env", "seeds", "variant", "runtime", "steps", "trials", "CPU", "GPU", "bundles"]
    rows = []
    for p in plans:
        need = total(p.bundles)
        rows.append([p.cell.name + ("-*" if study.searched else ""), p.cell.algo, p.cell.env, format_seeds(p.cell.seeds),
                     p.cell.variant or "-", p.runtime, str(p.total_steps), str(per_cell),
                     _amount(need.get("CPU", 0)), _amount(need.get("GPU", 0)), str(len(p.bundles))])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    lines = [f"study {study.name}: {n_trials} trial{'s' if n_trials != 1 else ''} "
             f"({len(plans)} cells x {per_cell} per cell), folder {folder}"]
    if study.seeds_per_trial > 1:
        lines.append(f"seeds per trial: up to {study.seeds_per_trial} for {' and '.join(GROUP_ALGOS)} on the local "
                     f"runtime (a seed group in one process, docs/seed_groups.md); one for the others")
    if study.search:
        lines.append("search: " + "; ".join(f"{k} {s.describe()}" for k, s in study.search.items())
                     + (f"; samples {study.samples}" if study.samples > 1 else ""))
    elif study.samples > 1:
        lines.append(f"samples: {study.samples}")
    lines += ["", fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    biggest = {k: max(total(p.bundles).get(k, 0) for p in plans) for k in ("CPU", "GPU")}
    everything = {k: sum(total(p.bundles).get(k, 0) * per_cell for p in plans) for k in ("CPU", "GPU")}
    sched = "none" if study.scheduler == "none" else (
        f"ASHA on {ASHA_METRIC} over {ASHA_TIME_ATTR} (grace period "
        f"{study.grace_period or 'the random warm-up plus one epoch'}, reduction factor {study.reduction_factor:g})")
    mode = ("WANDB_MODE if set, else online if WANDB_API_KEY is set, else offline" if study.wandb.mode == "auto"
            else study.wandb.mode)
    lines += ["",
              f"per trial at most {_amount(biggest['CPU'])} CPU, {_amount(biggest['GPU'])} GPU; "
              f"all trials at once {_amount(everything['CPU'])} CPU, {_amount(everything['GPU'])} GPU",
              f"max concurrent trials: {study.max_concurrent_trials or 'as many as the cluster holds'}; "
              f"max failures per trial: {study.max_failures}; scheduler: {sched}"
              + (f"; time budget {study.time_budget_s:g} s" if study.time_budget_s else ""),
              f"wandb: {mode}"
              + ("" if study.wandb.mode == "disabled" else
                 f" (project {study.wandb.project}, group {study.wandb.group or study.name})")]
    return "\n".join(lines) + "\n"


def dump_study(study: Study) -> str:
    return yaml.safe_dump(study.to_plain(), sort_keys=False)
