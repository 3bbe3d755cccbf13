"""Start, resume and checkpoint a training run in a run directory."""
from __future__ import annotations

import random
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from mbpo_ray.algos.mbpo import MBPOLoop
from mbpo_ray.config import TrainConfig, resolve_device, validate
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.runtime.local import LocalRuntime


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


def save_checkpoint(run: RunDirectory, loop: MBPOLoop, runtime: LocalRuntime) -> None:
    run.save_checkpoint({
        "env_steps": loop.state.env_steps,
        "loop": loop.state_dict(),
        "runtime": runtime.state_dict(),
        "rng": rng_state(),
    })


def train(cfg: TrainConfig, out_dir: str, resume: bool = False, progress: bool = True,
          stop_at: Optional[int] = None, checkpoint: Optional[Dict[str, Any]] = None) -> TrainResult:
    """Train ``cfg`` in ``out_dir`` (a new run, or ``resume`` the one there; ``checkpoint``
    passes that run's checkpoint when the caller has already read it).

    ``stop_at`` stops after that many env steps with a checkpoint, as Ctrl-C does."""
    validate(cfg)
    device = resolve_device(cfg.device)
    run = RunDirectory(out_dir)
    if not resume:
        run.check_new()
        checkpoint = None
    elif checkpoint is None:
        checkpoint = run.load_checkpoint()  # raises before anything in the directory changes

    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    runtime = LocalRuntime(cfg, device)
    loop = MBPOLoop(cfg, runtime)
    if checkpoint is not None:
        runtime.load_state_dict(checkpoint["runtime"])
        loop = MBPOLoop(cfg, runtime, MBPOLoop.state_from_dict(checkpoint["loop"]))
        set_rng_state(checkpoint["rng"])
        run.truncate_metrics(loop.state.env_steps)
        run.save_config(cfg)
    else:
        run.create(cfg)

    epochs_done = 0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.total_steps, initial=loop.state.env_steps, unit="step",
                   desc=f"MBPO {cfg.env_id} seed {cfg.seed}", dynamic_ncols=True, file=sys.stderr)
    start_wall, start_steps = time.perf_counter(), loop.state.env_steps
    stopped_early = False
    with stop_on_signals() as stop:
        while loop.state.env_steps < cfg.total_steps:
            record = loop.step()
            if bar is not None:
                bar.update(1)
            if record is not None:
                record["perf/wall_seconds"] = time.perf_counter() - start_wall
                run.append_metrics(record)
                epochs_done += 1
                if epochs_done % cfg.checkpoint_every_epochs == 0 or loop.state.env_steps == cfg.total_steps:
                    save_checkpoint(run, loop, runtime)
                if bar is not None:
                    bar.set_postfix(eval_return=f"{record['eval/return_mean']:.1f}",
                                    sps=f"{record['perf/sps']:.1f}", refresh=False)
            if stop.requested or (stop_at is not None and loop.state.env_steps >= stop_at):
                if loop.state.env_steps < cfg.total_steps:
                    save_checkpoint(run, loop, runtime)
                    stopped_early = True
                break
    if bar is not None:
        bar.close()
    run.plot_curve(title=f"MBPO {cfg.env_id}, seed {cfg.seed}")
    steps_per_s = (loop.state.env_steps - start_steps) / max(time.perf_counter() - start_wall, 1e-9)
    if progress:
        state = "stopped" if stopped_early else "finished"
        print(f"{state} at {loop.state.env_steps} env steps ({steps_per_s:.1f} steps/s); "
              f"last eval return {loop.state.last_eval}; run directory {run.path}", file=sys.stderr)
    return TrainResult(run, loop.state.env_steps, not stopped_early, loop.state.last_eval)
