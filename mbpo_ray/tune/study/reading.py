"""Reading a study file's YAML: a duplicated key is an error (YAML itself keeps the last one)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mbpo_ray.tune.study.model import StudyError

_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


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
