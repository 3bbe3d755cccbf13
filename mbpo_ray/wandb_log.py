"""Weights & Biases logging of a run: `mbpo-ray train --wandb` and every sweep trial
(docs/sweeps.md, "W&B").

One W&B run per run directory: the resolved config, each epoch record against ``env_steps``
(W&B's step axis for every key), the learning curve image at the end. Its files live in
``RUN/wandb/``. ``wandb`` is imported only when a logger starts.

Mode: ``auto`` is online when WANDB_API_KEY is set and offline otherwise (``wandb sync`` uploads
offline runs later); ``offline``, ``online`` and ``disabled`` force one. The key is read by
wandb itself from the environment: this module never reads, passes or writes it.

A record is sent to W&B once a checkpoint covers it (every record when
``checkpoint_every_epochs`` is 1, and all of them when the run ends or stops): a run resumed
from its checkpoint redoes the epochs after it, and W&B, like metrics.jsonl, gets each epoch
once. A resumed run continues the same W&B run (the id is read from ``RUN/wandb/``).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mbpo_ray.config import TrainConfig, to_dict
from mbpo_ray.errors import ConfigError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.seeds import GroupDirectory

WANDB_MODES = ("auto", "offline", "online", "disabled")
STEP_KEY = "env_steps"
CURVE_KEY = "curve"
_RUN_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+)$")


@dataclass
class WandbOptions:
    """Where a run goes on W&B: a study's ``wandb`` section or `train --wandb`'s flags. The API
    key is never one of them: it comes from WANDB_API_KEY only."""

    project: str = "mbpo-ray"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: Tuple[str, ...] = ()
    mode: str = "auto"

    def to_plain(self) -> Dict[str, Any]:
        return {"project": self.project, "entity": self.entity, "group": self.group,
                "tags": list(self.tags), "mode": self.mode}


def resolve_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """``auto`` -> online with an API key in the environment, else offline."""
    if mode not in WANDB_MODES:
        raise ConfigError(f"wandb mode {mode!r} is not allowed: one of {', '.join(WANDB_MODES)}")
    if mode == "auto":
        return "online" if environ.get("WANDB_API_KEY") else "offline"
    return mode


SERVICE_VARIABLE = "WANDB_SERVICE"


def own_service(environ=os.environ) -> None:
    """Let this process's W&B runs go through a wandb-core service of its own. wandb passes its
    service to child processes in WANDB_SERVICE (``<version>-<pid of its owner>-...``), so a
    sweep trial's process (a Ray worker) inherits the service of whatever process started Ray
    (a notebook, a test session); a killed trial's run stays open there, and the restarted
    trial could not continue its W&B run ("run ID ... is in use"). A service this process
    started itself is kept."""
    token = environ.get(SERVICE_VARIABLE)
    if token is None:
        return
    parts = token.split("-")
    if len(parts) < 2 or parts[1] != str(os.getpid()):
        del environ[SERVICE_VARIABLE]


def existing_run_id(run_dir: Path) -> Optional[str]:
    """The id of the newest W&B run in ``RUN/wandb/`` (a resumed run continues it)."""
    folder = Path(run_dir) / "wandb"
    if not folder.is_dir():
        return None
    found = sorted((p.name for p in folder.iterdir() if p.is_dir() and _RUN_FOLDER.match(p.name)),
                   key=lambda name: name.split("run-", 1)[1])
    return _RUN_FOLDER.match(found[-1]).group("id") if found else None


def stable_run_id(*parts: str) -> str:
    """A W&B run id made from ``parts`` (a study's id and a trial's name): the same trial gets
    the same run wherever it is restored."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]


class WandbLogger:
    """A ``mbpo_ray.train.TrainHook`` (start, epoch, end, close) that mirrors a run to W&B (see
    the module docstring). It does not subclass TrainHook so that this module loads without
    torch."""

    def __init__(self, options: WandbOptions, name: str, run_id: Optional[str] = None,
                 extra_config: Optional[Dict[str, Any]] = None):
        self.options, self.name = options, name
        self.mode = resolve_mode(options.mode)
        self.run_id, self.extra_config = run_id, dict(extra_config or {})
        self.run = None
        self.pending: List[Dict[str, Any]] = []
        self.last_step = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, run: RunDirectory, cfg: TrainConfig) -> None:
        if not self.enabled:
            return
        import wandb  # only now: importing wandb costs a second or two

        self.run = wandb.init(
            dir=str(run.path), mode=self.mode, project=self.options.project, entity=self.options.entity,
            group=self.options.group, name=self.name, tags=list(self.options.tags) or None,
            id=existing_run_id(run.path) or self.run_id, resume="allow",
            reinit="create_new",  # the seeds of a group each have a run, open side by side
            config={**to_dict(cfg), **self.extra_config},
            # console off: Tune and the progress bar own the terminal; nothing else is changed
            settings=wandb.Settings(console="off", silent=True))
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        if self.run is None:
            return
        self.pending.append(record)
        if checkpoint is not None:
            self._flush()

    def end(self, result) -> None:
        if self.run is None:
            return
        self._flush()
        curve = result.run_dir.curve_path
        if curve.is_file():
            import wandb

            self.run.log({STEP_KEY: result.env_steps, CURVE_KEY: wandb.Image(str(curve))})
        self.run.summary["completed"] = result.completed

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()

    def _flush(self) -> None:
        for record in self.pending:
            self.run.log(dict(record))
            self.last_step = record[STEP_KEY]
        self.pending = []


# --- the command line -----------------------------------------------------------------------------

def add_wandb_arguments(parser, train: bool) -> None:
    """W&B flags of `mbpo-ray train` (``train``: with --wandb to turn logging on) and of
    `mbpo-ray sweep` (they replace the study's wandb keys; --no-wandb turns it off)."""
    if train:
        parser.add_argument("--wandb", action="store_true",
                            help="log to Weights & Biases (offline unless WANDB_API_KEY is set; docs/sweeps.md)")
    else:
        parser.add_argument("--no-wandb", action="store_true", help="no W&B logging, whatever the study says")
    parser.add_argument("--wandb-project", metavar="P", help="W&B project (default mbpo-ray)")
    parser.add_argument("--wandb-entity", metavar="E", help="W&B entity (team or user)")
    parser.add_argument("--wandb-group", metavar="G",
                        help="W&B group" + ("" if train else " (default: the study name)"))
    parser.add_argument("--wandb-tags", metavar="T1,T2", help="W&B tags, comma-separated")
    parser.add_argument("--wandb-mode", choices=WANDB_MODES,
                        help="auto (default: online when WANDB_API_KEY is set, else offline), offline, online, "
                             "disabled")


def wandb_overrides(args) -> Dict[str, Any]:
    """The W&B keys the flags set."""
    out: Dict[str, Any] = {}
    for key in ("project", "entity", "group", "mode"):
        value = getattr(args, f"wandb_{key}", None)
        if value is not None:
            if not value:
                raise ConfigError(f"--wandb-{key}: expected a non-empty value")
            out[key] = value
    if getattr(args, "wandb_tags", None) is not None:
        out["tags"] = tuple(t.strip() for t in args.wandb_tags.split(",") if t.strip())
    if getattr(args, "no_wandb", False):
        out["mode"] = "disabled"
    return out


def train_hooks(args, cfg: TrainConfig, run_dir: str) -> List[WandbLogger]:
    """`mbpo-ray train`: a W&B logger when --wandb is given (else none). Any W&B flag without
    --wandb is an error rather than silently ignored."""
    options = _train_options(args)
    if options is None:
        return []
    return [WandbLogger(options, run_name(cfg.algo, cfg.env_id, cfg.seed), run_id=existing_run_id(Path(run_dir)))]


def group_hooks(args, cfg: TrainConfig, seeds: List[int], out_dir: str) -> Dict[int, List[WandbLogger]]:
    """`mbpo-ray train --seeds`: with --wandb, one W&B run per seed (each continued from its own
    ``OUT/seed<N>/wandb/``), in the W&B group named after OUT unless --wandb-group says."""
    options = _train_options(args)
    if options is None:
        return {}
    options.group = options.group or Path(out_dir).resolve().name
    lanes = GroupDirectory(out_dir)
    return {seed: [WandbLogger(options, run_name(cfg.algo, cfg.env_id, seed),
                               run_id=existing_run_id(lanes.lane(seed).path))] for seed in seeds}


def run_name(algo: str, env_id: str, seed: int) -> str:
    return f"{algo}-{env_id}-seed{seed}"


def _train_options(args) -> Optional[WandbOptions]:
    overrides = wandb_overrides(args)
    if not args.wandb:
        if overrides:
            raise ConfigError(f"--wandb-{next(iter(overrides))} needs --wandb")
        return None
    return WandbOptions(**overrides)
