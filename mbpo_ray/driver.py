"""The one driver of every run: a single run (``mbpo_ray.train``) or a group of seeds stepped in
lockstep (``mbpo_ray.seed_group``).

The driver steps what it drives until the run's total env steps, a stop signal (Ctrl-C,
SIGTERM), a follower's stop request or ``stop_at``; after each epoch it appends every seed's
record to its metrics.jsonl, writes the checkpoints when due (``checkpoint_due``), shows progress
and tells the followers (``TrainHook`` per seed, ``GroupHook`` for a group); a stop before the
end writes a checkpoint first. At the end it plots each seed's curve and reports the result.
"""
from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, TextIO, Tuple

from mbpo_ray.config import TrainConfig
from mbpo_ray.run_dir import RunDirectory


@dataclass
class TrainResult:
    run_dir: RunDirectory
    env_steps: int
    completed: bool
    last_eval: Optional[float]


class TrainHook:
    """Something that follows one seed's run as the driver drives it: W&B (mbpo_ray.wandb_log),
    a Ray Tune trial (mbpo_ray.tune.trainable). Every method is called in this process.
    ``stop_requested``: set by a hook (a Tune trial that its scheduler or the study's time
    budget stopped) to end the run after this epoch as Ctrl-C does: a checkpoint, then ``end``."""

    stop_requested: bool = False

    def start(self, run: RunDirectory, cfg: TrainConfig) -> None:
        """The run directory is ready (created, or restored for a resume)."""

    def epoch(self, record: Dict[str, Any], checkpoint: Optional[Path]) -> None:
        """``record`` was appended to metrics.jsonl; ``checkpoint`` is the checkpoint written
        right after it, or None when this epoch wrote none."""

    def end(self, result: TrainResult) -> None:
        """The run finished or stopped with a checkpoint; curve.png is written."""

    def close(self) -> None:
        """Always called last, also when the run ends with an exception."""


class GroupHook:
    """Something that follows a whole group (a sweep trial of packed seeds,
    mbpo_ray.tune.trainable); each seed's own followers are ``TrainHook``s. ``stop_requested`` as
    ``TrainHook``'s: the group checkpoints and ends after this epoch."""

    stop_requested: bool = False

    def start(self, runs: Dict[int, RunDirectory]) -> None:
        """Every seed's run directory is ready (created, or restored for a resume)."""

    def epoch(self, records: Dict[int, Dict[str, Any]], checkpointed: bool) -> None:
        """Every seed ended an epoch (``records`` by seed, appended to their metrics.jsonl);
        ``checkpointed``: every seed's checkpoint.pt was written right after."""

    def close(self) -> None:
        """Always called last, also when the group ends with an exception."""


@dataclass
class SeedRun:
    """One seed's run as the driver sees it: its config, algorithm, run directory, followers."""

    seed: int
    cfg: TrainConfig
    algo: Any  # mbpo_ray.algos.base.Algorithm
    run: RunDirectory
    hooks: Sequence[TrainHook] = ()

    def restore(self, checkpoint: Dict[str, Any]) -> Dict[str, Any]:
        """Resume from ``checkpoint`` (read and checked by the caller): the algorithm's state,
        metrics.jsonl cut back to the checkpoint's step, the config written again. Returns the
        checkpoint's random streams, which the caller makes current (or keeps for its seed)."""
        self.algo.load_state_dict(checkpoint["algorithm"])
        self.run.truncate_metrics(self.algo.env_steps)
        self.run.save_config(self.cfg)
        return checkpoint["rng"]

    def start_hooks(self) -> None:
        for hook in self.hooks:
            hook.start(self.run, self.cfg)


class Driven(Protocol):
    """What the driver steps: one run, or a group of seeds."""

    cfg: TrainConfig
    runs: Sequence[SeedRun]  # the seeds; each epoch yields one record per seed

    @property
    def env_steps(self) -> int:
        """Env steps of each seed so far."""

    def step(self) -> List[Optional[Dict[str, Any]]]:
        """Some env steps of every seed; their epoch records (all None when no epoch ended)."""

    def save_checkpoints(self, keep_copy: bool) -> None:
        """Every seed's checkpoint.pt; ``keep_copy`` also keeps the networks (checkpoints/)."""

    def summary(self, state: str, steps_per_s: float) -> str:
        """The line printed at the end (``state``: finished or stopped)."""


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


def checkpoint_due(cfg: TrainConfig, epochs_done: int, record: Dict[str, Any]) -> Tuple[bool, bool]:
    """(write checkpoint.pt, also keep a copy of the networks) after the epoch of ``record``,
    the ``epochs_done``-th of this session: every ``checkpoint_every_epochs`` epochs and at the
    end; a copy every ``keep_checkpoints_every`` epochs and at the end."""
    done = record["env_steps"] >= cfg.total_steps
    keep = cfg.keep_checkpoints_every
    return (epochs_done % cfg.checkpoint_every_epochs == 0 or done,
            keep > 0 and ((record["epoch"] + 1) % keep == 0 or done))


def hook_stop(hooks) -> bool:
    """Whether a follower asked the run to stop (``TrainHook.stop_requested``)."""
    return any(getattr(hook, "stop_requested", False) for hook in hooks)


def drive(driven: Driven, label: str, progress: bool, stop_at: Optional[int],
          group_hooks: Sequence[GroupHook] = ()) -> List[TrainResult]:
    """Step ``driven`` to its end (or a stop, with checkpoints); each seed's result."""
    cfg, runs = driven.cfg, driven.runs
    followers = [hook for seed_run in runs for hook in seed_run.hooks] + list(group_hooks)
    bar = Progress(label, cfg.total_steps, driven.env_steps, sys.stderr) if progress else None
    start_wall, start_steps = time.perf_counter(), driven.env_steps
    epochs_done, stopped_early = 0, False
    with stop_on_signals() as stop:
        while driven.env_steps < cfg.total_steps:
            before = driven.env_steps
            records = driven.step()
            if bar is not None:
                bar.update(driven.env_steps - before)
            if records[0] is not None:
                wall = time.perf_counter() - start_wall
                for seed_run, record in zip(runs, records):
                    record["perf/wall_seconds"] = wall
                    seed_run.run.append_metrics(record)
                epochs_done += 1
                saved, keep_copy = checkpoint_due(cfg, epochs_done, records[0])
                if saved:
                    driven.save_checkpoints(keep_copy)
                if bar is not None:
                    mean = sum(r["eval/return_mean"] for r in records) / len(records)
                    bar.epoch(driven.env_steps, {**records[0], "eval/return_mean": mean})
                for seed_run, record in zip(runs, records):
                    for hook in seed_run.hooks:
                        hook.epoch(record, seed_run.run.checkpoint_path if saved else None)
                for group_hook in group_hooks:
                    group_hook.epoch({r.seed: record for r, record in zip(runs, records)}, saved)
            if stop.requested or hook_stop(followers) or (stop_at is not None and driven.env_steps >= stop_at):
                if driven.env_steps < cfg.total_steps:
                    driven.save_checkpoints(False)
                    stopped_early = True
                break
    if bar is not None:
        bar.close()
    for seed_run in runs:
        seed_run.run.plot_curve(title=f"{seed_run.algo.title} {cfg.env_id}, seed {seed_run.seed}")
    steps_per_s = (driven.env_steps - start_steps) / max(time.perf_counter() - start_wall, 1e-9)
    if progress:
        print(driven.summary("stopped" if stopped_early else "finished", steps_per_s), file=sys.stderr)
    results = [TrainResult(r.run, driven.env_steps, not stopped_early, r.algo.last_eval) for r in runs]
    for seed_run, result in zip(runs, results):
        for hook in seed_run.hooks:
            hook.end(result)
    return results
