"""The study file of `mbpo-ray sweep`: its schema, its validation, its trials and what each
trial asks of the cluster (docs/sweeps.md is the reference of every key).

Everything here runs before Ray, torch or anything on disk is touched: a study with an unknown
key, algorithm or env, a malformed search space, a field that does not exist or a value that a
trial's config would refuse is a ``StudyError`` that names the key path
(``search.model.hidden_width``) and what is allowed. A trial's config is an ordinary
``TrainConfig`` built with the config package's presets and dotted overrides; nothing here
knows a field by name except the ones a study sets for every trial (``algo``, ``env_id``,
``seed``, ``total_steps``, ``torch_threads``, ``runtime``, ``device``).

The package's parts: ``model`` (the keys, ``Study``, ``Space``, ``Cell``, ``StudyError``),
``reading`` (the YAML), ``parsing`` (mapping to ``Study``, each key checked), ``planning`` (the
cells, trial names, each trial's config and resources, validation of every trial) and ``table``
(the `--dry-run` table, the study as YAML). What the sweep, the rehearsal and the CLI use is
imported from here.
"""
from mbpo_ray.tune.study.model import (ASHA_METRIC, ASHA_TIME_ATTR, DRIVER_CPUS, STORAGE_SCHEMES, Cell, Space, Study,
                                      StudyError)
from mbpo_ray.tune.study.parsing import load_study, parse_study, study_from_yaml
from mbpo_ray.tune.study.planning import (CellPlan, cell_name, cells, name_part, resource_fields, trial_bundles,
                                         trial_config, validate_study)
from mbpo_ray.tune.study.reading import parse_yaml
from mbpo_ray.tune.study.table import dump_study, trial_table

__all__ = ["ASHA_METRIC", "ASHA_TIME_ATTR", "DRIVER_CPUS", "STORAGE_SCHEMES", "Cell", "CellPlan", "Space", "Study",
           "StudyError", "cell_name", "cells", "dump_study", "load_study", "name_part", "parse_study", "parse_yaml",
           "resource_fields", "study_from_yaml", "trial_bundles", "trial_config", "trial_table", "validate_study"]
