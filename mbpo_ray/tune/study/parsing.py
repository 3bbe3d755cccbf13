"""A study file's mapping to a ``Study``: every key checked, each error naming its key path."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional


from mbpo_ray.config import ALGOS, TrainConfig, check_env_id, field_names, set_field
from mbpo_ray.config.validate import SEED_LIMIT
from mbpo_ray.errors import ConfigError
from mbpo_ray.group_dir import MAX_SEEDS
from mbpo_ray.wandb_log import WANDB_MODES, WandbOptions
from mbpo_ray.config.checks import flatten_sections
from mbpo_ray.tune.study.model import (AXIS_FIELDS, BUDGET_KEYS, DEFAULT_STORAGE, NAME_PATTERN, OVERRIDE_KEYS,
                                      SCHEDULER_KEYS, SCHEDULERS, SPACE_FORMS, SPACE_KINDS, STORAGE_SCHEMES,
                                      TOP_KEYS, WANDB_KEYS, Space, Study, StudyError, check, fail)
from mbpo_ray.tune.study.planning import validate_study
from mbpo_ray.tune.study.reading import read_yaml


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
    check.known_keys(raw, "", TOP_KEYS, "the study")
    name = check.string(raw.get("name", default_name), "name")
    if not NAME_PATTERN.match(name):
        raise fail("name", f"{name!r} is not allowed: letters, digits, '_', '.' and '-', starting "
                           f"with a letter or digit (it names the study folder)")
    study = Study(name=name, envs=[], seeds=[])
    if raw.get("description") is not None:
        study.description = check.string(raw["description"], "description")

    variants = check.mapping(raw.get("variants", {}), "variants")
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
        study.algorithms = check.unique_list(algorithms, "algorithms", lambda v, p: check.choice(v, p, ALGOS, "algorithm"))

    study.envs = check.unique_list(check.required(raw, "envs"), "envs", _env_id)
    study.seeds = _seeds(check.required(raw, "seeds"))
    if raw.get("seeds_per_trial") is not None:
        study.seeds_per_trial = check.integer(raw["seeds_per_trial"], "seeds_per_trial", minimum=1)
        if study.seeds_per_trial > MAX_SEEDS:
            raise fail("seeds_per_trial", f"{study.seeds_per_trial} is not allowed: 1 (one seed per trial) to "
                                          f"{MAX_SEEDS} (the largest seed group)")

    budget = check.mapping(raw.get("budget", {}), "budget")
    check.known_keys(budget, "budget", BUDGET_KEYS, "budget")
    if budget.get("env_steps") is not None:
        study.env_steps = check.integer(budget["env_steps"], "budget.env_steps", minimum=1)
    if budget.get("time_s") is not None:
        study.time_budget_s = check.number(budget["time_s"], "budget.time_s", positive=True)

    overrides = check.mapping(raw.get("overrides", {}), "overrides")
    check.known_keys(overrides, "overrides", OVERRIDE_KEYS, "overrides")
    study.overrides_all = _fields(overrides.get("all") or {}, "overrides.all")
    per_algo = check.mapping(overrides.get("algorithms") or {}, "overrides.algorithms")
    allowed_algos = sorted(set(study.algorithms) | {v["algo"] for v in study.variants.values() if "algo" in v},
                           key=ALGOS.index)
    for algo, spec in per_algo.items():
        check.choice(algo, f"overrides.algorithms.{algo}", allowed_algos, "algorithm of this study")
        study.overrides_algorithms[algo] = _fields(spec or {}, f"overrides.algorithms.{algo}")
    per_env = check.mapping(overrides.get("envs") or {}, "overrides.envs")
    for env, spec in per_env.items():
        check.choice(env, f"overrides.envs.{env}", study.envs, "env of this study")
        study.overrides_envs[env] = _fields(spec or {}, f"overrides.envs.{env}")

    for key, spec in _flatten_sections(check.mapping(raw.get("search", {}), "search"), "search").items():
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
        study.samples = check.integer(raw["samples"], "samples", minimum=1)
    _scheduler(raw.get("scheduler", "none"), study)
    if raw.get("max_concurrent_trials") is not None:
        study.max_concurrent_trials = check.integer(raw["max_concurrent_trials"], "max_concurrent_trials", minimum=1)
    if raw.get("max_failures") is not None:
        study.max_failures = check.integer(raw["max_failures"], "max_failures", minimum=0)
    if raw.get("gpus_per_trial") is not None:
        gpus = check.number(raw["gpus_per_trial"], "gpus_per_trial")
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
    return check.unique_list(value, "seeds", lambda v, p: _seed(v, p))


def _seed(value: Any, path: str) -> int:
    seed = check.integer(value, path, minimum=0)
    if seed >= SEED_LIMIT:
        raise fail(path, f"{seed} is not allowed: a seed below 2**32 = {SEED_LIMIT}")
    return seed


def _flatten_sections(mapping: Dict[str, Any], path: str) -> Dict[str, Any]:
    """``{model: {hidden_width: 64}}`` and ``{model.hidden_width: 64}`` alike, as dotted names;
    only a config section's name opens a nested mapping (a field's value may be a mapping, and a
    search space under a section's name is that field's space)."""
    for key in mapping:
        if not isinstance(key, str):
            raise fail(f"{path}.{key}", "a config field name must be a string")
    return flatten_sections(mapping, opens=lambda value: not _is_space(value))


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
    out = _flatten_sections(check.mapping(spec, path), path)
    for key, value in out.items():
        where = f"{path}.{key}"
        if _is_space(value):
            raise fail(where, "a search space belongs under search:, not in overrides or variants")
        _check_field(key, where, axis_ok=allow_algo, value=value, check_value=True)
        if key == "algo":
            check.choice(value, where, ALGOS, "algorithm")
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
    spec = check.mapping(value, "scheduler")
    check.known_keys(spec, "scheduler", SCHEDULER_KEYS, "scheduler")
    study.scheduler = check.choice(spec.get("type", "none"), "scheduler.type", SCHEDULERS, "allowed scheduler")
    if study.scheduler == "none":
        for key in ("grace_period", "reduction_factor"):
            if key in spec:
                raise fail(f"scheduler.{key}", "only with scheduler type asha")
        return
    if spec.get("grace_period") is not None:
        study.grace_period = check.integer(spec["grace_period"], "scheduler.grace_period", minimum=1)
    if spec.get("reduction_factor") is not None:
        factor = check.number(spec["reduction_factor"], "scheduler.reduction_factor")
        if factor <= 1:
            raise fail("scheduler.reduction_factor", f"{factor!r} is not allowed: a number above 1")
        study.reduction_factor = factor


def _storage(value: Any) -> str:
    storage = check.string(value, "storage")
    if "://" in storage and not storage.startswith(STORAGE_SCHEMES):
        raise fail("storage", f"{storage!r} is not allowed: a local or NFS path, or a URI starting with "
                              f"{', '.join(STORAGE_SCHEMES)}")
    return storage


def _wandb(value: Any) -> WandbOptions:
    if value is None or value is False:
        return WandbOptions(mode="disabled")
    spec = check.mapping(value, "wandb")
    check.known_keys(spec, "wandb", WANDB_KEYS, "the wandb section (the API key comes from WANDB_API_KEY only)")
    options = WandbOptions()
    if spec.get("project") is not None:
        options.project = check.string(spec["project"], "wandb.project")
    for key in ("entity", "group"):
        if spec.get(key) is not None:
            setattr(options, key, check.string(spec[key], f"wandb.{key}"))
    if spec.get("tags") is not None:
        tags = spec["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise fail("wandb.tags", f"expected a list of strings, got {tags!r}")
        options.tags = tuple(tags)
    if spec.get("mode") is not None:
        options.mode = check.choice(spec["mode"], "wandb.mode", WANDB_MODES, "allowed mode")
    if spec.get("init_timeout") is not None:
        options.init_timeout = check.number(spec["init_timeout"], "wandb.init_timeout", positive=True)
    return options
