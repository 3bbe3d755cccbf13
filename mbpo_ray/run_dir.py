"""The run directory: resolved config, metrics, checkpoint and learning curve.

    RUN/config.yaml      resolved TrainConfig (flat, dotted keys)
    RUN/metrics.jsonl    one record per epoch: env_steps, epoch and namespaced metrics
    RUN/checkpoint.pt    the latest checkpoint (written atomically)
    RUN/curve.png        eval return against env steps
    RUN/checkpoints/step_N.pt  with keep_checkpoints_every: the networks at N env steps
                         (policy and dynamics ensemble; read by `mbpo-ray analyze`,
                         docs/diagnostics.md)

Every metric key, its meaning and which algorithm writes it: docs/metrics.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import yaml

from mbpo_ray.atomic import replacing, write_atomic
from mbpo_ray.config import TrainConfig, from_dict, to_dict
from mbpo_ray.errors import ConfigError, RunDirError

CHECKPOINT_FORMAT = 2  # 2: the algorithm's state under "algorithm"


class RunDirectory:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    curve_path = property(lambda self: self.path / "curve.png")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")

    # --- creation ---
    def check_new(self) -> None:
        """A new run must not write into a directory that already holds a run."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            raise RunDirError(f"--out {self.path} already holds files; use --resume {self.path} "
                              f"to continue that run, or choose an empty --out")

    def create(self, cfg: TrainConfig) -> None:
        self.check_new()
        self.path.mkdir(parents=True, exist_ok=True)
        self.save_config(cfg)

    def load_config(self) -> TrainConfig:
        if not self.path.is_dir():
            raise RunDirError(f"--resume {self.path}: no such run directory")
        if not self.config_path.is_file():
            raise RunDirError(f"--resume {self.path}: no config.yaml; is it an mbpo-ray run directory?")
        try:
            flat = yaml.safe_load(self.config_path.read_text())
            if not isinstance(flat, dict):
                raise ConfigError("expected a mapping of field: value")
            return from_dict(flat)
        except (yaml.YAMLError, ConfigError) as exc:
            raise RunDirError(f"{self.config_path} is not a valid config: {exc}") from None

    def save_config(self, cfg: TrainConfig) -> None:
        write_atomic(self.config_path, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())

    # --- metrics ---
    def append_metrics(self, record: Dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_metrics(self, env_steps: int) -> None:
        """Drop records written after the checkpoint being resumed (they will be redone)."""
        kept = [r for r in self.read_metrics() if r["env_steps"] <= env_steps]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # --- checkpoints ---
    # torch is imported here, not at the top: the CLI reads configs before torch is loaded.
    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        self._save_state(state, self.checkpoint_path)

    @property
    def staged_checkpoint_path(self) -> Path:
        """A checkpoint written but not yet in force: a seed group writes every seed's before it
        replaces any seed's checkpoint.pt (mbpo_ray.group_dir.GroupDirectory)."""
        return self.path / "checkpoint.pt.next"

    def stage_checkpoint(self, state: Dict[str, Any]) -> None:
        self._save_state(state, self.staged_checkpoint_path)

    def commit_checkpoint(self) -> None:
        """The staged checkpoint becomes checkpoint.pt."""
        os.replace(self.staged_checkpoint_path, self.checkpoint_path)

    @staticmethod
    def _save_state(state: Dict[str, Any], path: Path) -> None:
        import torch

        with replacing(path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)

    def load_checkpoint(self) -> Dict[str, Any]:
        path = self.checkpoint_path
        if not path.is_file():
            raise RunDirError(f"--resume {self.path}: no checkpoint.pt yet (the run stopped before "
                              f"its first checkpoint); start it again with a new --out")
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # any failure to unpickle means an unusable file
            raise RunDirError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(f"{path} is not an mbpo-ray checkpoint of format {CHECKPOINT_FORMAT}")
        return state

    def save_snapshot(self, env_steps: int, networks: Dict[str, Any]) -> Path:
        """Keep ``networks`` (``mbpo_ray.diagnostics.load.networks_of_state``) as
        checkpoints/step_<env_steps>.pt, written atomically."""
        import torch

        self.checkpoints_dir.mkdir(exist_ok=True)
        path = self.checkpoints_dir / f"step_{env_steps}.pt"
        with replacing(path) as tmp:
            torch.save({"env_steps": env_steps, **networks}, tmp)
        return path

    def snapshot_paths(self) -> List[Path]:
        """The kept copies, by env steps."""
        found = []
        for p in self.checkpoints_dir.glob("step_*.pt"):
            step = p.stem[len("step_"):]
            if step.isdigit():
                found.append((int(step), p))
        return [p for _, p in sorted(found)]

    # --- plot ---
    def plot_curve(self, title: str = "") -> Path | None:
        records = [r for r in self.read_metrics() if "eval/return_mean" in r]
        if not records:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["env_steps"] for r in records]
        mean = [r["eval/return_mean"] for r in records]
        std = [r.get("eval/return_std", 0.0) for r in records]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, mean, label="eval return (deterministic policy)")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        alpha=0.2)
        train = [(r["env_steps"], r["train/episode_return"]) for r in self.read_metrics()
                 if "train/episode_return" in r]
        if train:
            ax.plot(*zip(*train), alpha=0.6, label="training episode return")
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        with replacing(self.curve_path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        return self.curve_path
