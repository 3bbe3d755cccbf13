"""Typed dataclass configs: the single source of truth for every run.

The CLI (``--set section.field=value``), config files (``--config FILE.yaml``, files.py) and a
run directory's config.yaml map onto these dataclasses (schema.py). Every per-env preset of the
paper's released code lives in ``PRESETS``, the preset of every other env in ``GENERIC_PRESET``
(presets.py; sources in docs/hyperparameters.md). ``validate`` (validate.py) is called before
anything runs or is written, and raises ``ConfigError`` naming the field and what is allowed.
This package imports neither torch, gymnasium nor numpy, so a bad config is refused before any
of them is loaded; whether an env exists and has supported spaces is checked when it is made
(``mbpo_ray.envs.prepare_config``).
"""
from mbpo_ray.config.files import ConfigFile, load_config_file, parse_config_file
from mbpo_ray.config.overrides import (apply_overrides, field_names, from_dict, make_config,
                                       parse_override, set_field, to_dict)
from mbpo_ray.config.presets import (ALGO_PRESETS, ENV_ID_HELP, GENERIC_PRESET, PRESETS, SUPPORTED_ENVS,
                                     check_env_id, env_preset, generic_init_random_steps, is_entry_point)
from mbpo_ray.config.schema import (ALGOS, PROPAGATIONS, RUNTIMES, SCHEDULES, TERMINATIONS, MBPOConfig,
                                    ModelConfig, PETSConfig, RayConfig, SACConfig, STEVEConfig, TrainConfig)
from mbpo_ray.config.validate import validate
from mbpo_ray.errors import ConfigError, UnknownEnvError

__all__ = [
    "ALGOS", "PROPAGATIONS", "RUNTIMES", "SCHEDULES", "TERMINATIONS",
    "ModelConfig", "SACConfig", "MBPOConfig", "PETSConfig", "STEVEConfig", "RayConfig", "TrainConfig",
    "PRESETS", "GENERIC_PRESET", "ALGO_PRESETS", "SUPPORTED_ENVS", "ENV_ID_HELP", "check_env_id",
    "env_preset", "generic_init_random_steps", "is_entry_point",
    "field_names", "set_field", "parse_override", "apply_overrides", "make_config", "to_dict",
    "from_dict", "validate", "ConfigError", "UnknownEnvError",
    "ConfigFile", "load_config_file", "parse_config_file",
]
