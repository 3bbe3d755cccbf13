"""Start, resume and checkpoint a training run in a run directory."""
from __future__ import annotations

import random
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, TextIO, Tuple

import numpy as np
import torch

from mbpo_ray.algos import Algorithm, make_algorithm
from mbpo_ray.config import TrainConfig, validate
from mbpo_ray.devices import resolve_device
from mbpo_ray.envs import prepare_config
from mbpo_ray.run_dir import RunDirectory


@dataclass
class TrainResult:
    run_dir: RunDirectory
    env_steps: int
    completed: bool
    last_eval: Optional[float]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the loop finishes the current env step, checkpoints
    and returns. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping: saving a checkpoint after this step (Ctrl-C again to abort)", file=sys.stderr)


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    flag = StopFlag()
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, flag)
    except ValueError:  # not the main thread: no handlers, nothing to restore
        previous = {}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class TrainHook:
    """Something that follows a run as ``train`` drives it: W&B (mbpo_ray.wandb_log), a Ray
    Tune trial (mbpo_ray.tune.trainable). Every method is called in this process.
    ``stop_requested``: set by a hook (a Tune trial that its scheduler or the study's time
    budget stopped) to end the run after this epoch as Ctrl-C does: a checkpoint, then ``end``."""

    stop_requested: bool = False

    def start(self, run: RunDirectory, cfg: TrainConfig) -> None:
        """The run directory is ready (created, or restored for a resume)."""

    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        """``record`` was appended to metrics.jsonl; ``checkpoint`` is the checkpoint written
        right after it, or None when this epoch wrote none."""

    def end(self, result: "TrainResult") -> None:
        """The run finished or stopped with a checkpoint; curve.png is written."""

    def close(self) -> None:
        """Always called last, also when the run ends with an exception."""


def save_checkpoint(run: RunDirectory, algo: Algorithm, keep_copy: bool = False) -> None:
    """Write checkpoint.pt; ``keep_copy`` also keeps the networks as checkpoints/step_N.pt
    (``keep_checkpoints_every``, docs/diagnostics.md)."""
    state = checkpoint_state(algo)
    run.save_checkpoint(state)
    if keep_copy:
        keep_networks(run, state)


def checkpoint_state(algo: Algorithm) -> Dict[str, Any]:
    """What checkpoint.pt holds (besides its format): the algorithm's state at its env step and
    the global random streams."""
    return {"env_steps": algo.env_steps, "algorithm": algo.state_dict(), "rng": rng_state()}


def keep_networks(run: RunDirectory, state: Dict[str, Any]) -> None:
    """Keep the networks of checkpoint ``state`` as checkpoints/step_N.pt."""
    from mbpo_ray.diagnostics.load import networks_of_state

    run.save_snapshot(state["env_steps"], networks_of_state(state["algorithm"]))


def checkpoint_due(cfg: TrainConfig, epochs_done: int, record: Dict[str, Any]) -> Tuple[bool, bool]:
    """(write checkpoint.pt, also keep a copy of the networks) after the epoch of ``record``,
    the ``epochs_done``-th of this session: every ``checkpoint_every_epochs`` epochs and at the
    end; a copy every ``keep_checkpoints_every`` epochs and at the end."""
    done = record["env_steps"] >= cfg.total_steps
    keep = cfg.keep_checkpoints_every
    return (epochs_done % cfg.checkpoint_every_epochs == 0 or done,
            keep > 0 and ((record["epoch"] + 1) % keep == 0 or done))


def train(cfg: TrainConfig, out_dir: str, resume: bool = False, progress: bool = True,
          stop_at: Optional[int] = None, checkpoint: Optional[Dict[str, Any]] = None,
          hooks: Sequence[TrainHook] = ()) -> TrainResult:
    """Train ``cfg`` (any algorithm of ``mbpo_ray.config.ALGOS``) in ``out_dir`` (a new run, or
    ``resume`` the one there; ``checkpoint`` passes that run's checkpoint when the caller has
    already read it).

    ``stop_at`` stops after that many env steps with a checkpoint, as Ctrl-C does. ``hooks``
    follow the run (``TrainHook``)."""
    try:
        return _train(cfg, out_dir, resume, progress, stop_at, checkpoint, hooks)
    finally:
        for hook in hooks:
            hook.close()


def _train(cfg: TrainConfig, out_dir: str, resume: bool, progress: bool, stop_at: Optional[int],
           checkpoint: Optional[Dict[str, Any]], hooks: Sequence[TrainHook]) -> TrainResult:
    validate(cfg)
    device = resolve_device(cfg.device)
    run = RunDirectory(out_dir)
    if not resume:
        run.check_new()
        checkpoint = None
    elif checkpoint is None:
        checkpoint = run.load_checkpoint()  # raises before anything in the directory changes
    # Make the env once (docs/termination.md, issue 12): an env that does not exist, bad
    # env_kwargs, unsupported spaces or a malformed termination function stop the run here,
    # before anything is written; the generic preset's env-dependent values are filled in.
    cfg, _ = prepare_config(cfg)

    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    algo = make_algorithm(cfg, device, run.path)  # the directory is written only once this works
    try:
        if checkpoint is None:
            run.create(cfg)
        else:
            algo.load_state_dict(checkpoint["algorithm"])
            set_rng_state(checkpoint["rng"])
            run.truncate_metrics(algo.env_steps)
            run.save_config(cfg)
        for hook in hooks:
            hook.start(run, cfg)
        return _train_loop(cfg, run, algo, progress, stop_at, hooks)
    finally:
        algo.close()


class Progress:
    """Progress on stderr: a tqdm bar on a terminal; one line per epoch in a file or a pipe,
    where a redrawn bar would leave a line every few env steps."""

    def __init__(self, label: str, total: int, initial: int, stream: TextIO):
        self.label, self.total, self.stream = label, total, stream
        self.bar = None
        if getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", desc=label, dynamic_ncols=True,
                            file=stream)

    def update(self, steps: int) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def epoch(self, env_steps: int, record: Dict[str, Any]) -> None:
        shown = {"eval return": f"{record['eval/return_mean']:.1f}"}
        if "perf/sps" in record:
            shown["sps"] = f"{record['perf/sps']:.1f}"
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
        else:
            print(f"{self.label}: {env_steps}/{self.total} env steps, "
                  + ", ".join(f"{k} {v}" for k, v in shown.items()), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def hook_stop(hooks) -> bool:
    """Whether a hook asked the run to stop (``TrainHook.stop_requested``)."""
    return any(getattr(hook, "stop_requested", False) for hook in hooks)


def _train_loop(cfg: TrainConfig, run: RunDirectory, algo: Algorithm, progress: bool,
                stop_at: Optional[int], hooks: Sequence[TrainHook] = ()) -> TrainResult:
    epochs_done = 0
    label = f"{algo.title} {cfg.env_id} seed {cfg.seed}"
    bar = Progress(label, cfg.total_steps, algo.env_steps, sys.stderr) if progress else None
    start_wall, start_steps = time.perf_counter(), algo.env_steps
    stopped_early = False
    with stop_on_signals() as stop:
        while algo.env_steps < cfg.total_steps:
            before = algo.env_steps
            record = algo.step()
            if bar is not None:
                bar.update(algo.env_steps - before)
            if record is not None:
                record["perf/wall_seconds"] = time.perf_counter() - start_wall
                run.append_metrics(record)
                epochs_done += 1
                saved, keep_copy = checkpoint_due(cfg, epochs_done, record)
                if saved:
                    save_checkpoint(run, algo, keep_copy)
                if bar is not None:
                    bar.epoch(algo.env_steps, record)
                for hook in hooks:
                    hook.epoch(record, run.checkpoint_path if saved else None)
            if stop.requested or hook_stop(hooks) or (stop_at is not None and algo.env_steps >= stop_at):
                if algo.env_steps < cfg.total_steps:
                    save_checkpoint(run, algo)
                    stopped_early = True
                break
    if bar is not None:
        bar.close()
    run.plot_curve(title=label.replace(" seed", ", seed"))
    steps_per_s = (algo.env_steps - start_steps) / max(time.perf_counter() - start_wall, 1e-9)
    if progress:
        state = "stopped" if stopped_early else "finished"
        print(f"{state} at {algo.env_steps} env steps ({steps_per_s:.1f} steps/s); "
              f"last eval return {algo.last_eval}; run directory {run.path}", file=sys.stderr)
    result = TrainResult(run, algo.env_steps, not stopped_early, algo.last_eval)
    for hook in hooks:
        hook.end(result)
    return result
