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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from mbpo_ray.agents.stacked import StackedUpdate
from mbpo_ray.algos import make_algorithm
from mbpo_ray.config import TrainConfig, validate
from mbpo_ray.devices import resolve_device
from mbpo_ray.driver import GroupHook, SeedRun, TrainHook, drive
from mbpo_ray.envs import prepare_config
from mbpo_ray.errors import RunDirError
from mbpo_ray.models.stacked_fit import StackedFit
from mbpo_ray.precision import autocast
from mbpo_ray.process_setup import set_up as set_up_process
from mbpo_ray.rng import LaneRandom, rng_state, seed_everything
from mbpo_ray.group_dir import GroupDirectory, check_group_config, format_seeds
from mbpo_ray.train import checkpoint_state, keep_networks


def stacks_fits(setting: str, device: torch.device) -> bool:
    """``model.stacked_fit``: whether a group fits its seeds' ensembles as one stacked fit. On
    auto, only on CUDA: on a CPU the stacked fit was slower than the seeds' fits one after another
    (benchmarks/results/seed_groups/cpu_fit.json: the S-fold larger activations fall out of the
    caches, so the same matmuls and elementwise ops run slower per element)."""
    return setting == "always" or (setting == "auto" and device.type == "cuda")


@dataclass
class Lane(SeedRun):
    """One seed of a group: its run as the driver sees it, and its own random streams."""

    random: LaneRandom = field(default=None)  # type: ignore[assignment]

    @property
    def loop(self):
        return self.algo.loop

    @property
    def runtime(self):  # a StackableRuntime (mbpo_ray.runtime.base)
        return self.algo.runtime


class SeedGroup:
    """The lanes of a group, stepped in lockstep, with one stacked agent update."""

    def __init__(self, lanes: List[Lane], group_dir: GroupDirectory):
        self.lanes = self.runs = lanes  # runs: as the driver sees them (mbpo_ray.driver.Driven)
        self.group_dir = group_dir
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
        resets = [lane.runtime.agent.resets for lane in self.lanes]
        for lane in self.lanes:  # MBPO+ resets, before the fit as alone (docs/mbpo_plus.md#resets)
            with lane.random.active():
                lane.loop.reset_if_due()
        if [lane.runtime.agent.resets for lane in self.lanes] != resets:
            # mbpo.agent_reset_every reset the agents (all seeds at one step): the stacked copy
            # and its Adam state are built again from them
            self.stacked = StackedUpdate([lane.runtime.agent for lane in self.lanes])
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
        data = [lane.runtime.fit_data() for lane in self.lanes]
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
            batches, noises, subsets = [], [], []
            for lane in self.lanes:
                with lane.random.torch_active():
                    batches.append(tuple(lane.runtime.sample_batch(batch_size, b.real_ratio)))
                    noises.append(lane.runtime.agent.draw_noise(batch_size))
                    subsets.append(lane.runtime.agent.draw_subset())
            with autocast(self.device, self.precision):
                metrics = self.stacked.update(batches, noises, None if subsets[0] is None else subsets)
            for lane, row in zip(self.lanes, metrics):
                lane.runtime.add_agent_metrics(row)
        self.stacked.write_back()

    def save_checkpoints(self, keep_copy: bool = False) -> None:
        """Every seed's checkpoint.pt, replaced together (``GroupDirectory.commit_checkpoints``)."""
        self.stacked.save_to_agents()
        for lane in self.lanes:
            with lane.random.active():
                state = checkpoint_state(lane.algo)
            lane.run.stage_checkpoint(state)
            if keep_copy:
                keep_networks(lane.run, state)
        self.group_dir.commit_checkpoints([lane.seed for lane in self.lanes])

    def summary(self, state: str, steps_per_s: float) -> str:
        last = ", ".join(f"seed {lane.seed}: {lane.algo.last_eval}" for lane in self.lanes)
        return (f"{state} at {self.env_steps} env steps per seed ({steps_per_s:.1f} steps/s per seed, "
                f"{steps_per_s * len(self.lanes):.1f} in all); last eval returns {last}; "
                f"run directories {self.group_dir.path}/seed<N>")

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
    set_up_process(cfg.torch_threads)

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
            lanes.append(Lane(seed, lane_cfg, algo, run, hooks.get(seed, ()),
                              random=LaneRandom(rng_state(), device.type == "cuda")))
        if resume:
            for lane in lanes:
                lane.random.state = lane.restore(checkpoints[lane.seed])
        group = SeedGroup(lanes, group_dir)
        if not resume:
            group_dir.create(seeds)
            for lane in lanes:
                lane.run.create(lane.cfg)
        for lane in lanes:
            lane.start_hooks()
        for group_hook in group_hooks:
            group_hook.start({lane.seed: lane.run for lane in lanes})
        label = f"{lanes[0].algo.title} {cfg.env_id} seeds {format_seeds(seeds)}"
        results = drive(group, label, progress, stop_at, group_hooks)
        return GroupResult(group_dir.path, seeds, group.env_steps, results[0].completed,
                           {lane.seed: lane.algo.last_eval for lane in lanes})
    finally:
        for lane in lanes:
            lane.algo.close()
