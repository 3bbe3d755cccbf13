"""Weights & Biases logging of a run: `mbpo-ray train --wandb` and every sweep trial
(docs/sweeps.md, "W&B").

One W&B run per run directory: the resolved config, each epoch record against ``env_steps``
(W&B's step axis for every key), the learning curve image at the end. Its files live in
``RUN/wandb/``. ``wandb`` is imported only when a logger starts.

Mode: ``auto`` follows WANDB_MODE when the environment sets it (W&B's own convention), else it is
online when WANDB_API_KEY is set and offline otherwise (``wandb sync`` uploads offline runs
later); ``offline``, ``online`` and ``disabled`` force one. The key is read by wandb itself from
the environment: this module never reads, passes or writes it.

Logging never costs a run (docs/sweeps.md, "W&B"): an online start waits at most
``init_timeout`` seconds for W&B's servers and, when they cannot be reached, the run logs
offline in the same folder, with one warning saying how to upload it later; any other W&B error
(starting, logging, finishing) is one warning line, after which the run goes on without W&B.
The metrics, checkpoints and curve of the run directory never depend on W&B.

Every epoch exactly once, after any fault (docs/sweeps.md, "W&B"): a record is sent once a
checkpoint covers it (every record when ``checkpoint_every_epochs`` is 1, and all of them when
the run ends or stops), as history step ``i`` for the ``i``-th line of metrics.jsonl. A killed
process takes with it what its W&B service had not yet written, so a resumed run (the id is read
from ``RUN/wandb/``) first reads back what W&B holds (offline: the records durably in the run's
``.wandb`` files, ``mbpo_ray.wandb_records``; online: the history steps W&B's servers report
when the run resumes) and sends again the checkpointed epochs it lacks, never one it holds. A
W&B service that dies under a live run is restarted once or twice the same way.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mbpo_ray.config import TrainConfig, to_dict
from mbpo_ray.errors import ConfigError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.group_dir import GroupDirectory

WANDB_MODES = ("auto", "offline", "online", "disabled")
# WANDB_MODE values W&B accepts, as the mode they mean ("dryrun" and "run" are its old names)
ENV_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "dryrun": "offline", "run": "online"}
DEFAULT_INIT_TIMEOUT_S = 30.0
STEP_KEY = "env_steps"
CURVE_KEY = "curve"
# How often a run restarts a W&B run that failed under it (its service killed, say)
MAX_RESTARTS = 2
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
    # How long an online run waits for W&B's servers when it starts before it logs offline
    # instead (W&B's init_timeout setting).
    init_timeout: float = DEFAULT_INIT_TIMEOUT_S

    def to_plain(self) -> Dict[str, Any]:
        return {"project": self.project, "entity": self.entity, "group": self.group,
                "tags": list(self.tags), "mode": self.mode, "init_timeout": self.init_timeout}


def resolve_mode(mode: str, environ: Mapping[str, str] = os.environ) -> str:
    """``auto`` -> WANDB_MODE when the environment sets it to a mode W&B knows, else online with
    an API key in the environment, else offline. The other modes are what they say."""
    if mode not in WANDB_MODES:
        raise ConfigError(f"wandb mode {mode!r} is not allowed: one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    env_mode = environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ENV_MODES:
        return ENV_MODES[env_mode]
    if env_mode:
        warn(f"WANDB_MODE={env_mode!r} is not a W&B mode (one of {', '.join(ENV_MODES)}); "
             f"wandb mode auto decides by WANDB_API_KEY")
    return "online" if environ.get("WANDB_API_KEY") else "offline"


def warn(message: str) -> None:
    """One warning line on stderr (a trial's stderr is shown by Tune)."""
    sys.stderr.write(f"mbpo-ray: warning: W&B: {message}\n")
    sys.stderr.flush()


# Runs of this process that are open (seed groups log one per seed, side by side), and whether an
# online start of this process has already failed (the next runs then start offline at once).
_OPEN_RUNS: set = set()
_ONLINE_FAILED = False
# How many times a run's restart replaced this process's W&B service (``WandbLogger._guarded``)
_SERVICE_GENERATION = 0


def _release_service(wandb, always: bool = False) -> None:
    """When no other run of this process is open (or ``always``), shut this process's W&B
    service down and wait for it. Two reasons: a failed ``wandb.init`` leaves its run open in the
    service, which then refuses the same id ("run ID ... is in use"), and the offline start needs
    a fresh one; and ``run.finish()`` returns before the service has written the end of the run's
    ``.wandb`` file (it only informs the service that the run is done), so a run is complete on
    disk, for ``wandb sync`` or a trial's next process, once its service is shut down. A run
    restarted after a W&B error (``WandbLogger._guarded``) needs a new service whatever else is
    open: the other runs of the process (a seed group's) then fail at their next call and are
    restarted in turn on the new service, having lost nothing that their catch-up does not send
    again."""
    if _OPEN_RUNS and not always:
        return
    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001  (the offline start then reports what fails)
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


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
    """The id of the newest W&B run in ``RUN/wandb/`` (a resumed run continues it): the name of
    its ``run-<id>.wandb`` file (W&B adds ``-1``, ``-2`` to a folder's name when two starts of
    a run fall in the same second), else the end of the folder's name."""
    folder = Path(run_dir) / "wandb"
    if not folder.is_dir():
        return None
    found = sorted((p.name for p in folder.iterdir() if p.is_dir() and _RUN_FOLDER.match(p.name)),
                   key=lambda name: name.split("run-", 1)[1])
    if not found:
        return None
    logs = sorted(p.name for p in (folder / found[-1]).glob("run-*.wandb"))
    return logs[0][len("run-"):-len(".wandb")] if logs else _RUN_FOLDER.match(found[-1]).group("id")


def stable_run_id(*parts: str) -> str:
    """A W&B run id made from ``parts`` (a study's id and a trial's name): the same trial gets
    the same run wherever it is restored."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]


class WandbLogger:
    """A ``mbpo_ray.driver.TrainHook`` (start, epoch, end, close) that mirrors a run to W&B (see
    the module docstring). It does not subclass TrainHook so that this module loads without
    torch."""

    def __init__(self, options: WandbOptions, name: str, run_id: Optional[str] = None,
                 extra_config: Optional[Dict[str, Any]] = None):
        self.options, self.name = options, name
        self.mode = resolve_mode(options.mode)
        self.run_id, self.extra_config = run_id, dict(extra_config or {})
        self.run = None
        self.run_dir: Optional[RunDirectory] = None
        self.cfg: Optional[TrainConfig] = None
        self.open_id: Optional[str] = None
        # records appended to metrics.jsonl since the last checkpoint (the tail of the file)
        self.pending: List[Dict[str, Any]] = []
        self.next_step = 0  # the W&B history step of the next row
        self.curve_sent = False
        self.restarts = 0
        self.generation = 0  # the W&B service this run started on (_SERVICE_GENERATION)

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, run: RunDirectory, cfg: TrainConfig) -> None:
        global _ONLINE_FAILED
        if not self.enabled:
            return
        try:
            import wandb  # only now: importing wandb costs a second or two
        except Exception as exc:  # noqa: BLE001  (logging never costs a run)
            warn(f"cannot import wandb ({_first_line(exc)}); this run is not logged to W&B")
            return
        self.run_dir, self.cfg = run, cfg
        folder = Path(run.path) / "wandb"
        # one id for the run whichever mode it ends up in: an online start that fails continues
        # offline as the same run, which `wandb sync` then uploads
        self.run_id = existing_run_id(run.path) or self.run_id or secrets.token_hex(4)
        if self.mode == "online" and _ONLINE_FAILED:
            self.mode = "offline"
            warn(f"W&B could not be reached earlier in this process; this run logs offline to {folder}: "
                 f"upload it later with `wandb sync {folder}/offline-run-*`")
        if self.mode == "offline" and self._offline_run_complete():
            return  # a finished run resumed again: W&B holds all of it, nothing to send
        before = set(os.listdir(folder)) if folder.is_dir() else set()
        try:
            self.run = self._init(wandb, self.mode)
        except Exception as exc:  # noqa: BLE001
            if self.mode != "online":
                warn(f"could not start the {self.mode} run ({_first_line(exc)}); this run is not logged to W&B")
                return
            reason = _first_line(exc)
            _ONLINE_FAILED = True
            _release_service(wandb)
            # what the failed online start left is not a run to upload
            for name in (set(os.listdir(folder)) if folder.is_dir() else set()) - before:
                if _RUN_FOLDER.match(name) and not name.startswith("offline-"):
                    shutil.rmtree(folder / name, ignore_errors=True)
            try:
                self.run = self._init(wandb, "offline")
            except Exception as exc:  # noqa: BLE001
                warn(f"could not start online ({reason}) nor offline ({_first_line(exc)}); this run is not "
                     f"logged to W&B")
                return
            self.mode = "offline"
            warn(f"could not reach W&B within {self.options.init_timeout:g} s ({reason}); this run logs offline "
                 f"to {folder}: upload it later with `wandb sync {folder}/offline-run-*`")
        self._guarded("send the epochs W&B lacks", self._catch_up)

    def _init(self, wandb, mode: str):
        wb = wandb.init(
            dir=str(self.run_dir.path), mode=mode, project=self.options.project, entity=self.options.entity,
            group=self.options.group, name=self.name, tags=list(self.options.tags) or None,
            id=self.run_id, resume="allow",
            reinit="create_new",  # the seeds of a group each have a run, open side by side
            config={**to_dict(self.cfg), **self.extra_config},
            # console off: Tune and the progress bar own the terminal; nothing else is changed
            settings=wandb.Settings(console="off", silent=True, init_timeout=self.options.init_timeout))
        _OPEN_RUNS.add(self.run_id)
        self.open_id, self.generation = self.run_id, _SERVICE_GENERATION
        wb.define_metric(STEP_KEY)
        wb.define_metric("*", step_metric=STEP_KEY)
        return wb

    # --- what W&B holds ---
    def _held(self):
        """``mbpo_ray.wandb_records.Held``. Offline: the rows durably in the run's offline
        ``.wandb`` files; online: what W&B's servers report as the resumed run's summary and step."""
        from mbpo_ray.wandb_records import Held, offline_held

        if self.mode != "online":
            return offline_held(self.run_dir.path, self.run_id)
        if not getattr(self.run, "resumed", False):
            return Held(set(), None, 0)
        last = self.run.summary.get(STEP_KEY)
        held = {r[STEP_KEY] for r in self.run_dir.read_metrics() if last is not None and r[STEP_KEY] <= last}
        curve = last if self.run.summary.get(CURVE_KEY) is not None else None
        return Held(held, curve, int(getattr(self.run, "starting_step", 0) or 0))

    def _offline_run_complete(self) -> bool:
        """Whether metrics.jsonl reaches the run's end and the offline run holds every epoch of
        it, its curve at the last one and a finish."""
        from mbpo_ray.wandb_records import offline_held

        records = self.run_dir.read_metrics()
        if not records or records[-1][STEP_KEY] < self.cfg.total_steps:
            return False
        held = offline_held(self.run_dir.path, self.run_id)
        return (held.finished and held.curve_at == records[-1][STEP_KEY]
                and all(r[STEP_KEY] in held.epochs for r in records))

    def _catch_up(self) -> None:
        """Send the epochs a checkpoint covers (metrics.jsonl less its pending tail) that W&B
        does not hold, in order, after the rows it holds."""
        held = self._held()
        self.next_step = held.next_step
        records = self.run_dir.read_metrics()
        covered = records[:len(records) - len(self.pending)]
        for record in covered:
            if record[STEP_KEY] not in held.epochs:
                self._log(record)
        self.curve_sent = bool(covered) and held.curve_at == covered[-1][STEP_KEY]

    def _log(self, row: Dict[str, Any]) -> None:
        self.run.log(dict(row), step=self.next_step, commit=True)
        self.next_step += 1

    # --- the hook ---
    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        if self.run is None:
            return
        every = self.cfg.video_every_epochs
        if every and checkpoint is not None and (record["epoch"] + 1) % every == 0:
            record = {**record, **self._videos(record[STEP_KEY])}
        self.pending.append(record)
        if checkpoint is not None:
            self._guarded("log an epoch", self._flush)

    def _videos(self, env_steps: int) -> Dict[str, Any]:
        """``video_every_epochs``: the epoch's videos (mbpo_ray.video.make.epoch_videos) as
        ``video/policy`` and ``video/dream`` of its row; a video that cannot be made is one
        warning and the run goes on. A row sent again after a fault (``_catch_up``) is the
        metrics.jsonl record, without its videos; the files stay in RUN/videos/."""
        try:
            import wandb

            from mbpo_ray.video.make import epoch_videos

            files = epoch_videos(self.run_dir.path, env_steps)
            return {f"video/{name}": wandb.Video(str(path), format="mp4") for name, path in files.items()}
        except Exception as exc:  # noqa: BLE001  (logging never costs a run)
            warn(f"could not make the videos at {env_steps} env steps ({_first_line(exc)}); the run goes on")
            return {}

    def end(self, result) -> None:
        if self.run is None:
            return
        self._guarded("log the last epochs", self._flush)
        curve = result.run_dir.curve_path
        if self.run is not None and curve.is_file() and not self.curve_sent:
            def send_curve():
                import wandb

                # at the last epoch's env steps, those the curve ends at (a run stopped by Ctrl-C
                # is a few env steps past them)
                records = result.run_dir.read_metrics()
                at = records[-1][STEP_KEY] if records else result.env_steps
                self._log({STEP_KEY: at, CURVE_KEY: wandb.Image(str(curve))})
                self.curve_sent = True
            self._guarded("send the curve", send_curve)
        if self.run is not None:
            self._guarded("write the summary", lambda: self.run.summary.__setitem__("completed", result.completed))

    def close(self) -> None:
        if self.run is not None:
            self._finish(None, lambda exc: warn(f"could not finish the run ({_first_line(exc)}); the run "
                                                f"directory is complete"))

    def _flush(self) -> None:
        while self.pending:
            self._log(self.pending[0])
            self.pending.pop(0)
            self.curve_sent = False  # a curve sent before (a finished run resumed) is not the last row

    def _guarded(self, what: str, action) -> None:
        """Do ``action``. A W&B error (its service gone, say) restarts the run, which first sends
        what W&B lost, then does ``action`` again, at most ``MAX_RESTARTS`` times a run; after
        that an error is one warning, after which this run stops logging to W&B."""
        while True:
            try:
                action()
                return
            except Exception as exc:  # noqa: BLE001  (logging never costs a run)
                error = _first_line(exc)
            # a new service, unless another run of this process has already replaced the one
            # this run used (the other seeds of a group, after one seed's restart)
            replaced = self.generation != _SERVICE_GENERATION
            self._finish(1, lambda exc: None, new_service=not replaced and self.restarts < MAX_RESTARTS)
            if self.restarts >= MAX_RESTARTS:
                warn(f"could not {what} ({error}); the run goes on without W&B")
                return
            self.restarts += 1
            warn(f"could not {what} ({error}); restarting the W&B run")
            import wandb

            try:
                self.run = self._init(wandb, self.mode)
                self._catch_up()
            except Exception as exc:  # noqa: BLE001
                self._finish(1, lambda exc: None)
                warn(f"could not restart the W&B run ({_first_line(exc)}); the run goes on without W&B")
                return

    def _finish(self, exit_code: Optional[int], on_error, new_service: bool = False) -> None:
        global _SERVICE_GENERATION
        import wandb

        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as exc:  # noqa: BLE001
                on_error(exc)
        _OPEN_RUNS.discard(self.open_id)
        _release_service(wandb, always=new_service)
        if new_service:
            _SERVICE_GENERATION += 1


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
                        help="auto (default: WANDB_MODE if set, else online when WANDB_API_KEY is set, else "
                             "offline), offline, online, disabled")
    parser.add_argument("--wandb-init-timeout", metavar="S", type=float,
                        help=f"seconds an online run waits for W&B when it starts before it logs offline "
                             f"(default {DEFAULT_INIT_TIMEOUT_S:g})")


def wandb_overrides(args) -> Dict[str, Any]:
    """The W&B keys the flags set."""
    out: Dict[str, Any] = {}
    for key in ("project", "entity", "group", "mode"):
        value = getattr(args, f"wandb_{key}", None)
        if value is not None:
            if not value:
                raise ConfigError(f"--wandb-{key}: expected a non-empty value")
            out[key] = value
    timeout = getattr(args, "wandb_init_timeout", None)
    if timeout is not None:
        if not timeout > 0:
            raise ConfigError(f"--wandb-init-timeout {timeout:g} is not allowed: a number of seconds above 0")
        out["init_timeout"] = float(timeout)
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
