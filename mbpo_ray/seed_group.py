"""Many seeds in one process: `mbpo-ray train --seeds 0-7 ...` (issue 13; docs/seed_groups.md).

A seed group trains N independent runs of one config that differ only in their seed. Each seed
keeps everything a single run has (its envs, D_env, D_model, ensemble, agent, random streams)
and its own run directory, ``OUT/seed<N>/``, in a single run's layout: config.yaml,
metrics.jsonl, checkpoint.pt (a single run's checkpoint: any seed can also be resumed alone),
curve.png. ``OUT/group.yaml`` names the seeds. The seeds advance in lockstep, one env step each
in turn; their agent updates, the hot path (G per env step), run as one stacked update
(``mbpo_ray.agents.stacked``) and their model fits as one stacked fit
(``mbpo_ray.models.stacked_fit``): one batched matmul per layer for all seeds.

Random streams: each seed's global RNG state (Python, NumPy, torch, CUDA) is swapped in while
that seed works and out after, so a seed draws exactly the numbers it draws alone; only the
stacked update's arithmetic differs from a single run's (float32 rounding, docs/seed_groups.md).
"""
from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from mbpo_ray.agents.stacked import StackedUpdate
from mbpo_ray.algos import make_algorithm
from mbpo_ray.config import TrainConfig, validate
from mbpo_ray.devices import resolve_device
from mbpo_ray.envs import prepare_config
from mbpo_ray.errors import RunDirError
from mbpo_ray.models.stacked_fit import StackedFit
from mbpo_ray.models.targets import fit_data_from_buffer
from mbpo_ray.precision import autocast
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.seeds import GroupDirectory, check_group_config, format_seeds
from mbpo_ray.train import (Progress, TrainHook, TrainResult, checkpoint_due, checkpoint_state, hook_stop,
                            keep_networks, rng_state, seed_everything, set_rng_state, stop_on_signals)


class GroupHook:
    """Something that follows a whole group as ``train_group`` drives it (a sweep trial of
    packed seeds, mbpo_ray.tune.trainable); each seed's own followers are ``TrainHook``s.
    ``stop_requested`` as ``TrainHook``'s: the group checkpoints and ends after this epoch."""

    stop_requested: bool = False

    def start(self, runs: Dict[int, RunDirectory]) -> None:
        """Every seed's run directory is ready (created, or restored for a resume)."""

    def epoch(self, records: Dict[int, Dict[str, Any]], checkpointed: bool) -> None:
        """Every seed ended an epoch (``records`` by seed, appended to their metrics.jsonl);
        ``checkpointed``: every seed's checkpoint.pt was written right after."""

    def close(self) -> None:
        """Always called last, also when the group ends with an exception."""


def stacks_fits(setting: str, device: torch.device) -> bool:
    """``model.stacked_fit``: whether a group fits its seeds' ensembles as one stacked fit. On
    auto, only on CUDA: on a CPU the stacked fit was slower than the seeds' fits one after another
    (benchmarks/results/seed_groups/cpu_fit.json: the S-fold larger activations fall out of the
    caches, so the same matmuls and elementwise ops run slower per element)."""
    return setting == "always" or (setting == "auto" and device.type == "cuda")


class LaneRandom:
    """One seed's global random state, swapped in while the seed works."""

    def __init__(self, state: Dict[str, Any], cuda: bool):
        self.state, self.cuda = state, cuda

    @contextmanager
    def active(self) -> Iterator[None]:
        """Python, NumPy, torch and CUDA streams (env steps, fits, rollouts, evaluation)."""
        set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()

    @contextmanager
    def torch_active(self) -> Iterator[None]:
        """Only torch's streams: the draws of one agent update (batch indices, policy noise)."""
        torch.set_rng_state(self.state["torch"])
        if self.cuda:
            torch.cuda.set_rng_state_all(self.state["cuda"])
        try:
            yield
        finally:
            self.state["torch"] = torch.get_rng_state()
            if self.cuda:
                self.state["cuda"] = torch.cuda.get_rng_state_all()


@dataclass
class Lane:
    seed: int
    cfg: TrainConfig
    algo: Any  # mbpo_ray.algos.mbpo.MBPO on a LocalRuntime
    run: RunDirectory
    random: LaneRandom
    hooks: Sequence[TrainHook] = ()

    @property
    def loop(self):
        return self.algo.loop

    @property
    def runtime(self):
        return self.algo.runtime


class SeedGroup:
    """The lanes of a group, stepped in lockstep, with one stacked agent update."""

    def __init__(self, lanes: List[Lane]):
        self.lanes = lanes
        self.cfg = lanes[0].cfg
        runtime = lanes[0].runtime
        self.device, self.precision = runtime.device, runtime.precision
        self.stacked = StackedUpdate([lane.runtime.agent for lane in lanes])
        stacked = stacks_fits(self.cfg.model.stacked_fit, self.device) and lanes[0].loop.uses_model
        self.stacked_fit = StackedFit([lane.runtime.model_trainer for lane in lanes]) if stacked else None

    @property
    def env_steps(self) -> int:
        return self.lanes[0].algo.env_steps

    def step(self) -> List[Optional[Dict[str, Any]]]:
        """One env step of every seed; each seed's epoch record (None where none ended)."""
        fits = self.fit_models()
        for lane, fit in zip(self.lanes, fits):
            with lane.random.active():
                lane.loop.advance(fit)
        due = {lane.loop.updates_due() for lane in self.lanes}
        if due == {True}:
            started = time.perf_counter()
            self.update_agents()
            share = (time.perf_counter() - started) / len(self.lanes)
            for lane in self.lanes:  # each seed's perf/sac_seconds: its share of the stacked update
                lane.loop.timer.add("sac", share)
        elif due != {False}:
            raise RuntimeError("the seeds of a group left lockstep (some update, others do not)")
        records = []
        for lane in self.lanes:
            with lane.random.active():
                records.append(lane.loop.finish_step())
        return records

    def fit_models(self) -> List[Optional[Dict[str, float]]]:
        """The model fits of every seed when due (else Nones), as one stacked fit
        (``mbpo_ray.models.stacked_fit``); each seed draws its fit's random numbers from its own
        stream and then fits its learned termination (if any) as it does alone."""
        due = {lane.loop.fit_due() for lane in self.lanes}
        if due == {False} or self.stacked_fit is None:  # each seed fits alone in its step
            return [None] * len(self.lanes)
        if due != {True}:
            raise RuntimeError("the seeds of a group left lockstep (some fit their model, others do not)")
        started = time.perf_counter()
        new_data = [lane.runtime.new_data_mse() for lane in self.lanes]
        data = [fit_data_from_buffer(lane.runtime.real_buffer) for lane in self.lanes]
        with autocast(self.device, self.precision):
            fitted = self.stacked_fit.fit(data, [lane.random.torch_active for lane in self.lanes])
        share = (time.perf_counter() - started) / len(self.lanes)
        out = []
        for lane, metrics, new in zip(self.lanes, fitted, new_data):
            started = time.perf_counter()
            with lane.random.active():
                out.append(lane.runtime.model_fit_done(metrics, new))
            # each seed's perf/model_seconds: its share of the stacked fit, and its own rest
            lane.loop.timer.add("model", share + time.perf_counter() - started)
        return out

    def update_agents(self) -> None:
        """``mbpo.updates_per_step`` updates of every seed, stacked; each seed draws its batch
        and noise from its own stream, as ``LocalRuntime.update_agent`` does alone."""
        b, batch_size = self.cfg.mbpo, self.cfg.sac.batch_size
        for _ in range(b.updates_per_step):
            batches, noises = [], []
            for lane in self.lanes:
                with lane.random.torch_active():
                    batches.append(tuple(lane.runtime.sample_batch(batch_size, b.real_ratio)))
                    noises.append(lane.runtime.agent.draw_noise(batch_size))
            with autocast(self.device, self.precision):
                metrics = self.stacked.update(batches, noises)
            for lane, row in zip(self.lanes, metrics):
                lane.runtime.metrics.add(row)
        self.stacked.write_back()

    def save_checkpoints(self, group_dir: GroupDirectory, keep_copy: bool = False) -> None:
        """Every seed's checkpoint.pt, replaced together (``GroupDirectory.commit_checkpoints``)."""
        self.stacked.save_to_agents()
        for lane in self.lanes:
            with lane.random.active():
                state = checkpoint_state(lane.algo)
            lane.run.stage_checkpoint(state)
            if keep_copy:
                keep_networks(lane.run, state)
        group_dir.commit_checkpoints([lane.seed for lane in self.lanes])

@dataclass
class GroupResult:
    path: Path
    seeds: List[int]
    env_steps: int
    completed: bool
    last_evals: Dict[int, Optional[float]]


def train_group(cfg: TrainConfig, seeds: List[int], out_dir: str, resume: bool = False, progress: bool = True,
                stop_at: Optional[int] = None, configs: Optional[Dict[int, TrainConfig]] = None,
                checkpoints: Optional[Dict[int, Dict[str, Any]]] = None,
                hooks: Optional[Dict[int, Sequence[TrainHook]]] = None,
                group_hooks: Sequence[GroupHook] = ()) -> GroupResult:
    """Train ``cfg`` with each of ``seeds`` in one process (a new group in ``out_dir``, or
    ``resume`` the one there, whose seeds' configs ``configs`` gives; ``checkpoints`` passes the
    seeds' checkpoints when the caller has already read them). ``stop_at`` stops after that many
    env steps with checkpoints, as Ctrl-C does. ``hooks`` follow each seed as they follow a
    single run (by seed); ``group_hooks`` follow the group."""
    hooks = hooks or {}
    try:
        return _train_group(cfg, seeds, out_dir, resume, progress, stop_at, configs, checkpoints, hooks,
                            group_hooks)
    finally:
        for hook in [h for seed in seeds for h in hooks.get(seed, ())] + list(group_hooks):
            hook.close()


def _train_group(cfg: TrainConfig, seeds: List[int], out_dir: str, resume: bool, progress: bool,
                 stop_at: Optional[int], configs: Optional[Dict[int, TrainConfig]],
                 checkpoints: Optional[Dict[int, Dict[str, Any]]], hooks: Dict[int, Sequence[TrainHook]],
                 group_hooks: Sequence[GroupHook]) -> GroupResult:
    validate(cfg)
    check_group_config(cfg)
    device = resolve_device(cfg.device)
    group_dir = GroupDirectory(out_dir)
    if resume:
        if checkpoints is None:  # all read (and checked) before anything changes
            checkpoints = group_dir.load_checkpoints(seeds)
        steps = {seed: c["env_steps"] for seed, c in checkpoints.items()}
        if len(set(steps.values())) != 1:
            raise RunDirError(f"--resume {out_dir}: the seeds' checkpoints are at different env steps "
                              f"({', '.join(f'seed{s} {n}' for s, n in steps.items())}); resume them one by "
                              f"one with --resume {out_dir}/seed<N>")
    else:
        group_dir.check_new()
    cfg, _ = prepare_config(cfg)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)

    lanes: List[Lane] = []
    try:
        for seed in seeds:
            lane_cfg = copy.deepcopy(configs[seed] if configs else cfg)
            lane_cfg.seed = seed
            if configs:
                lane_cfg, _ = prepare_config(lane_cfg)
            seed_everything(seed)  # as a single run: its networks start from the same weights
            run = group_dir.lane(seed)
            algo = make_algorithm(lane_cfg, device, run.path)
            lanes.append(Lane(seed, lane_cfg, algo, run, LaneRandom(rng_state(), device.type == "cuda"),
                              hooks.get(seed, ())))
        if resume:
            for lane in lanes:
                lane.algo.load_state_dict(checkpoints[lane.seed]["algorithm"])
                lane.random.state = checkpoints[lane.seed]["rng"]
                lane.run.truncate_metrics(lane.algo.env_steps)
                lane.run.save_config(lane.cfg)
        group = SeedGroup(lanes)
        if not resume:
            group_dir.create(seeds)
            for lane in lanes:
                lane.run.create(lane.cfg)
        for lane in lanes:
            for hook in lane.hooks:
                hook.start(lane.run, lane.cfg)
        for group_hook in group_hooks:
            group_hook.start({lane.seed: lane.run for lane in lanes})
        return _group_loop(group, group_dir, progress, stop_at, group_hooks)
    finally:
        for lane in lanes:
            lane.algo.close()


def _group_loop(group: SeedGroup, group_dir: GroupDirectory, progress: bool, stop_at: Optional[int],
                group_hooks: Sequence[GroupHook]) -> GroupResult:
    cfg, lanes = group.cfg, group.lanes
    seeds = [lane.seed for lane in lanes]
    label = f"{lanes[0].algo.title} {cfg.env_id} seeds {format_seeds(seeds)}"
    bar = Progress(label, cfg.total_steps, group.env_steps, sys.stderr) if progress else None
    start_wall, start_steps = time.perf_counter(), group.env_steps
    epochs_done, stopped_early = 0, False
    with stop_on_signals() as stop:
        while group.env_steps < cfg.total_steps:
            records = group.step()
            if bar is not None:
                bar.update(1)
            if records[0] is not None:
                wall = time.perf_counter() - start_wall
                for lane, record in zip(lanes, records):
                    record["perf/wall_seconds"] = wall
                    lane.run.append_metrics(record)
                epochs_done += 1
                saved, keep_copy = checkpoint_due(cfg, epochs_done, records[0])
                if saved:
                    group.save_checkpoints(group_dir, keep_copy)
                if bar is not None:
                    mean = float(np.mean([r["eval/return_mean"] for r in records]))
                    bar.epoch(group.env_steps, {**records[0], "eval/return_mean": mean})
                for lane, record in zip(lanes, records):
                    for hook in lane.hooks:
                        hook.epoch(record, lane.run.checkpoint_path if saved else None)
                for group_hook in group_hooks:
                    group_hook.epoch({lane.seed: record for lane, record in zip(lanes, records)}, saved)
            if (stop.requested or hook_stop(group_hooks)
                    or (stop_at is not None and group.env_steps >= stop_at)):
                if group.env_steps < cfg.total_steps:
                    group.save_checkpoints(group_dir)
                    stopped_early = True
                break
    if bar is not None:
        bar.close()
    for lane in lanes:
        lane.run.plot_curve(title=f"{lane.algo.title} {cfg.env_id}, seed {lane.seed}")
    steps_per_s = (group.env_steps - start_steps) / max(time.perf_counter() - start_wall, 1e-9)
    last = {lane.seed: lane.algo.last_eval for lane in lanes}
    if progress:
        state = "stopped" if stopped_early else "finished"
        print(f"{state} at {group.env_steps} env steps per seed ({steps_per_s:.1f} steps/s per seed, "
              f"{steps_per_s * len(lanes):.1f} in all); last eval returns "
              + ", ".join(f"seed {s}: {v}" for s, v in last.items()) + f"; run directories {group_dir.path}/seed<N>",
              file=sys.stderr)
    for lane in lanes:
        result = TrainResult(lane.run, group.env_steps, not stopped_early, lane.algo.last_eval)
        for hook in lane.hooks:
            hook.end(result)
    return GroupResult(group_dir.path, seeds, group.env_steps, not stopped_early, last)
