"""Checks of plain values as YAML and the command line give them, shared by config files and
overrides (``mbpo_ray.config``) and study files (``mbpo_ray.tune.study``): each returns the value
as its type or raises the caller's ``ConfigError`` kind, naming the key path and what is allowed."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from mbpo_ray.config.schema import TrainConfig
from mbpo_ray.errors import ConfigError

# The config's sections: the names under which a nested mapping holds dotted fields
# ({mbpo: {updates_per_step: 5}} is mbpo.updates_per_step).
SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory))


def is_integer(value: Any) -> bool:
    """A whole number (1 or 1.0; never a boolean, which YAML reads from yes/no/on/off)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and int(value) == value)


def is_number(value: Any) -> bool:
    """A finite int or float (never a boolean)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def flatten_sections(mapping: Dict[str, Any], opens: Callable[[Any], bool] = lambda value: True
                     ) -> Dict[str, Any]:
    """Nested sections to dotted names: {"mbpo": {"updates_per_step": 5}} -> {"mbpo.updates_per_step": 5}.
    Only a section's name whose value is a mapping (and ``opens`` it) opens it; a mapping under
    any other key (env_kwargs) is a value. Keys must be strings (checked by the caller)."""
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        if key in SECTIONS and isinstance(value, dict) and opens(value):
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


class Checker:
    """The checks, raising ``error`` (a ConfigError kind) with messages "PATH: what is wrong"."""

    def __init__(self, error: Type[ConfigError] = ConfigError):
        self.error = error

    def fail(self, path: str, message: str) -> ConfigError:
        return self.error(f"{path}: {message}" if path else message)

    def required(self, raw: Dict[str, Any], key: str) -> Any:
        if raw.get(key) is None:
            raise self.fail(key, "required")
        return raw[key]

    def known_keys(self, mapping: Dict[str, Any], path: str, allowed: Sequence[str], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                raise self.fail(where, f"unknown key in {what}; allowed: {', '.join(allowed)}")

    def mapping(self, value: Any, path: str) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {value!r}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def integer(self, value: Any, path: str, minimum: Optional[int] = None) -> int:
        if not is_integer(value):
            raise self.fail(path, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"{value!r} is not allowed: at least {minimum}")
        return int(value)

    def number(self, value: Any, path: str, positive: bool = False) -> float:
        if not is_number(value):
            raise self.fail(path, f"expected a number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(path, f"{value!r} is not allowed: a positive number")
        return float(value)

    def choice(self, value: Any, path: str, allowed: Sequence[str], what: str) -> str:
        if value not in allowed:
            raise self.fail(path, f"{value!r} is not an {what}; allowed: {', '.join(allowed) or 'none'}")
        return value

    def unique_list(self, value: Any, path: str, check: Callable[[Any, str], Any]) -> List[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a non-empty list, got {value!r}")
        out = [check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        for i, v in enumerate(out):
            if v in out[:i]:
                raise self.fail(f"{path}[{i}]", f"{v!r} is listed twice")
        return out
