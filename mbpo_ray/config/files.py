"""Config files: ``mbpo-ray train --config FILE.yaml`` (and ``mbpo-ray config show --config``)
in the schema of a run directory's config.yaml.

A file is a YAML mapping of config fields, by dotted name (``mbpo.updates_per_step: 10``, as
config.yaml stores them) or nested by section (``mbpo: {updates_per_step: 10}``), plus an
optional ``presets:`` mapping of env id to fields: an env's own preset, applied on top of its
paper or generic preset and below the algorithm's preset (so ``--algo sac`` still gets G = 1),
and only when the run is on that env. The fields outside ``presets:`` apply after the algorithm's
preset, like ``--set`` (which in turn applies on top of the file). docs/hyperparameters.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

import yaml

from mbpo_ray.config.checks import flatten_sections
from mbpo_ray.config.presets import check_env_id
from mbpo_ray.errors import ConfigError

PRESETS_KEY = "presets"


@dataclass
class ConfigFile:
    fields: Dict[str, Any] = field(default_factory=dict)
    """Dotted field name -> value, applied like --set (before it)."""
    presets: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """Env id -> that env's own preset (dotted field name -> value)."""


def flatten(mapping: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Nested sections to dotted names: {"mbpo": {"updates_per_step": 5}} -> {"mbpo.updates_per_step": 5}.
    Only a section's name opens a nested mapping; a mapping under any other key (env_kwargs) is a value."""
    for key in mapping:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: field names are strings, got {key!r}")
    return flatten_sections(mapping)


def parse_config_file(data: Any, where: str) -> ConfigFile:
    if data is None:
        return ConfigFile()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of field: value, got {type(data).__name__}")
    data = dict(data)
    presets = data.pop(PRESETS_KEY, None) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{where}: {PRESETS_KEY} must map env ids to fields, got {presets!r}")
    out = ConfigFile(fields=flatten(data, where))
    for env_id, fields in presets.items():
        check_env_id(env_id)
        if not isinstance(fields, dict):
            raise ConfigError(f"{where}: {PRESETS_KEY}.{env_id} must be a mapping of field: value")
        flat = flatten(fields, f"{where}: {PRESETS_KEY}.{env_id}")
        for name in ("env_id", "algo"):
            if name in flat:
                raise ConfigError(f"{where}: {PRESETS_KEY}.{env_id} may not set {name} (a preset belongs "
                                  f"to one env and applies to every algorithm)")
        out.presets[env_id] = flat
    return out


def load_config_file(path: str | Path) -> ConfigFile:
    """Read a config file; a ConfigError names the file and what is wrong with it. Field names and
    values are checked when the fields are applied (``make_config``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})".replace("\n", " ")) from None
    return parse_config_file(data, f"--config {path}")
