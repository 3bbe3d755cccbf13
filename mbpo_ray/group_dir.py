"""A seed group's directory (as run_dir.py is a run's) and its seed lists (`mbpo-ray train --seeds`,
docs/seed_groups.md): what the command line checks before torch is imported; the training is
mbpo_ray.seed_group's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import yaml

from mbpo_ray.atomic import temporary_beside, write_atomic
from mbpo_ray.config import TrainConfig, to_dict
from mbpo_ray.config.validate import SEED_LIMIT
from mbpo_ray.errors import ConfigError, RunDirError
from mbpo_ray.run_dir import RunDirectory

GROUP_FILE = "group.yaml"
# Written once every seed's checkpoint is staged, removed once all are in force: a group's
# checkpoints change together (GroupDirectory.save_checkpoints).
COMMIT_FILE = "group.commit"
GROUP_ALGOS = ("mbpo", "sac")  # the learners whose update can be stacked (SAC's)
MAX_SEEDS = 64


def parse_seeds(spec: str) -> List[int]:
    """"0-7", "0,2,5" or "0-3,8" -> the seeds, in order; at least 2, distinct."""
    seeds: List[int] = []
    try:
        for part in str(spec).split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if last < first:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"--seeds {spec!r}: expected seeds as ranges and lists, e.g. 0-7, 0,2,5 or 0-3,8") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {spec!r}: a seed appears twice")
    if not 2 <= len(seeds) <= MAX_SEEDS:
        raise ConfigError(f"--seeds {spec!r}: a group has 2 to {MAX_SEEDS} seeds (one seed: --seed)")
    if any(not 0 <= s < SEED_LIMIT for s in seeds):
        raise ConfigError(f"--seeds {spec!r}: seeds must be in [0, 2**32)")
    return seeds


def check_group_config(cfg: TrainConfig) -> None:
    """What a group can train: MBPO or SAC on the local runtime."""
    if cfg.algo not in GROUP_ALGOS:
        raise ConfigError(f"--seeds trains {' or '.join(GROUP_ALGOS)}, not algo {cfg.algo!r} "
                          f"(its update cannot be stacked); run its seeds one by one with --seed")
    if cfg.runtime != "local":
        raise ConfigError("--seeds runs on the local runtime (one process); --runtime ray spreads one "
                          "seed over actors instead")


class GroupDirectory:
    """OUT/group.yaml (the seeds) and OUT/seed<N>/, one run directory per seed."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def group_file(self) -> Path:
        return self.path / GROUP_FILE

    def is_group(self) -> bool:
        return self.group_file.is_file()

    def lane(self, seed: int) -> RunDirectory:
        return RunDirectory(self.path / f"seed{seed}")

    def check_new(self) -> None:
        RunDirectory(self.path).check_new()

    def create(self, seeds: List[int]) -> None:
        self.check_new()
        self.path.mkdir(parents=True, exist_ok=True)
        self.group_file.write_text(yaml.safe_dump({"seeds": list(seeds)}))

    @property
    def commit_file(self) -> Path:
        return self.path / COMMIT_FILE

    def commit_checkpoints(self, seeds: List[int]) -> None:
        """Every seed's checkpoint.pt replaced together. The caller has staged each seed's new
        checkpoint beside its old one (``RunDirectory.stage_checkpoint``); then the commit file
        is written and each new checkpoint takes its old one's place. A process killed at any
        point leaves a group that ``finish_interrupted_save`` brings to all-old (before the
        commit file exists) or all-new (after)."""
        write_atomic(self.commit_file, yaml.safe_dump({"seeds": list(seeds)}))
        for seed in seeds:
            self.lane(seed).commit_checkpoint()
        self.commit_file.unlink()

    def finish_interrupted_save(self) -> None:
        """Complete or undo a ``save_checkpoints`` that a killed process left half done."""
        if self.commit_file.is_file():
            for seed in self.seeds():
                if self.lane(seed).staged_checkpoint_path.is_file():
                    self.lane(seed).commit_checkpoint()
            self.commit_file.unlink()
        for seed in self.seeds():
            for leftover in (self.lane(seed).staged_checkpoint_path,
                             temporary_beside(self.lane(seed).staged_checkpoint_path)):
                if leftover.is_file():
                    leftover.unlink()

    def load_checkpoints(self, seeds: List[int]) -> Dict[int, Dict[str, Any]]:
        """The seeds' checkpoints, after finishing a save that a killed process left half done."""
        self.finish_interrupted_save()
        return {seed: self.lane(seed).load_checkpoint() for seed in seeds}

    def seeds(self) -> List[int]:
        try:
            data = yaml.safe_load(self.group_file.read_text())
            seeds = [int(s) for s in data["seeds"]]
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{self.group_file} is not a seed group's file ({type(exc).__name__}: {exc})") from None
        return seeds

    def load_configs(self) -> Dict[int, TrainConfig]:
        configs = {seed: self.lane(seed).load_config() for seed in self.seeds()}
        first = to_dict(next(iter(configs.values())))
        for seed, cfg in configs.items():
            other = {**to_dict(cfg), "seed": first["seed"]}
            if other != first:
                differ = sorted(k for k in first if other.get(k) != first[k])
                raise RunDirError(f"{self.path}: seed{seed}/config.yaml differs from the other seeds' "
                                  f"in {', '.join(differ)}; a group resumes seeds of one config")
        return configs


def format_seeds(seeds: List[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (what parse_seeds reads back)."""
    runs: List[List[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
