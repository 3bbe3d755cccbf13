"""Fields by dotted name (``sac.discount``): ``--set`` overrides, presets, and the flat dict a
run directory stores."""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from typing import Any, Dict, List, Optional, Tuple

import yaml

from mbpo_ray.config.checks import is_integer, is_number
from mbpo_ray.config.presets import ALGO_PRESETS, check_env_id, env_preset
from mbpo_ray.config.schema import ALGOS, TrainConfig
from mbpo_ray.config.validate import require, validate
from mbpo_ray.errors import ConfigError


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> Dict[str, Any]:
    """The resolved field types of a config dataclass (resolving them costs milliseconds, and a
    config load sets every field)."""
    return typing.get_type_hints(cls)


def _fields(obj) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def field_names(cfg: TrainConfig) -> List[str]:
    """Every leaf field of ``cfg`` by dotted name, in declaration order."""
    names = []
    for name in _fields(cfg):
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            names += [f"{name}.{sub}" for sub in _fields(value)]
        else:
            names.append(name)
    return names


def _resolve(cfg: TrainConfig, dotted: str):
    """Return (owner object, field name, type hint) for a dotted field name."""
    parts = dotted.split(".")
    owner = cfg
    for depth, part in enumerate(parts):
        if part not in _fields(owner):
            raise ConfigError(
                f"unknown config field {dotted!r}; allowed fields: {', '.join(field_names(cfg))}"
            )
        hint = _type_hints(type(owner))[part]
        value = getattr(owner, part)
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(value):
                raise ConfigError(f"{dotted!r} is a section; set one of its fields, "
                                  f"e.g. {dotted}.{next(iter(_fields(value)))}")
            return owner, part, hint
        if not dataclasses.is_dataclass(value):
            raise ConfigError(f"{'.'.join(parts[:depth + 1])!r} is not a section; "
                              f"allowed fields: {', '.join(field_names(cfg))}")
        owner = value
    raise AssertionError("unreachable")


def _coerce(dotted: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(dotted, value, inner)
    if origin in (dict, Dict):  # env_kwargs: its values are checked by validate
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted}: expected a mapping (e.g. {{max_episode_steps: 200}}), got {value!r}")
        return dict(value)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(dotted, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{dotted}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_coerce(dotted, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
    if hint is int:
        if not is_integer(value):
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if not is_number(value):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML reads a bare on/off/yes/no/true/false as a boolean
            raise ConfigError(f"{dotted}: expected a string, got the boolean {value!r} (YAML reads a bare "
                              f"on, off, yes, no, true or false as a boolean: quote the word)")
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {hint} for {dotted}")


# A field whose value is a mapping: "env_kwargs.KEY=value" sets one of its keys.
MAPPING_FIELDS = ("env_kwargs",)


def set_field(cfg: TrainConfig, dotted: str, value: Any) -> None:
    head, _, key = dotted.partition(".")
    if head in MAPPING_FIELDS and key:
        setattr(cfg, head, {**getattr(cfg, head), key: value})
        return
    owner, name, hint = _resolve(cfg, dotted)
    setattr(owner, name, _coerce(dotted, value, hint))


def parse_override(text: str) -> Tuple[str, Any]:
    """Parse one ``field=value`` override; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot read value {raw!r}: {exc}") from None
    if isinstance(value, str) and raw.strip() != value:
        value = raw.strip()
    return key.strip(), _numbers_from_strings(value)


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers_from_strings(value: Any) -> Any:
    """YAML 1.1 reads 3e-4 (no decimal point) as a string; read such strings as numbers."""
    if isinstance(value, list):
        return [_numbers_from_strings(v) for v in value]
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def apply_overrides(cfg: TrainConfig, overrides: Dict[str, Any]) -> TrainConfig:
    for key, value in overrides.items():
        set_field(cfg, key, value)
    return cfg


def make_config(env_id: str, overrides: Optional[Dict[str, Any]] = None,
                env_presets: Optional[Dict[str, Dict[str, Any]]] = None) -> TrainConfig:
    """The config of a run on ``env_id``, in layers (docs/hyperparameters.md): the dataclass
    defaults; the env's paper preset, or the generic preset for any other env; the env's entry
    in ``env_presets`` (a config file's ``presets:``), if any; the algorithm's preset;
    ``overrides``. Validated; an ``env_id`` among the overrides picks the env (and its preset).

    Env-dependent values that the generic preset leaves null are filled in when the env is made
    (``mbpo_ray.envs.prepare_config``): this module never imports gymnasium."""
    overrides = dict(overrides or {})
    env_id = overrides.pop("env_id", env_id)
    check_env_id(env_id)
    algo = overrides.get("algo", "mbpo")
    require(algo in ALGOS, "algo", algo, f"one of {', '.join(ALGOS)}")
    cfg = TrainConfig(env_id=env_id)
    apply_overrides(cfg, env_preset(env_id))
    apply_overrides(cfg, (env_presets or {}).get(env_id, {}))
    apply_overrides(cfg, ALGO_PRESETS[algo])
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    """The flat ``{dotted name: plain value}`` form stored in a run directory's config.yaml."""
    out = {}
    for name in field_names(cfg):
        owner, leaf, _ = _resolve(cfg, name)
        value = getattr(owner, leaf)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[name] = value
    return out


def from_dict(flat: Dict[str, Any]) -> TrainConfig:
    cfg = TrainConfig()
    apply_overrides(cfg, flat)
    validate(cfg)
    return cfg
