"""A study cut down to minutes for the rehearsal: its algorithms, runtimes, ``ray.*`` actor
counts and resources (so its placement groups), scheduler and W&B section kept; its first env,
its first seed, a budget of ``EPOCHS`` short epochs, small networks and a checkpoint every
epoch. A trial then takes a minute or two on a 2-core machine, and a node lost mid-study costs
it one epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from mbpo_ray.tune.study import Study, dump_study, load_study, validate_study

EPOCH_LENGTH = 200
EPOCHS = 10  # a node lost after the first checkpoint leaves the trial most of its work
# Every phase of MBPO within the budget (a warm-up epoch, then model fits, rollouts and SAC
# updates each epoch), as the test suite's tiny runs
TINY_FIELDS: Dict[str, Any] = {
    "eval_episodes": 1,
    "checkpoint_every_epochs": 1,
    "torch_threads": 1,
    "mbpo.epoch_length": EPOCH_LENGTH,
    "mbpo.init_random_steps": EPOCH_LENGTH,
    "mbpo.model_train_freq": 100,
    "mbpo.rollout_batch_size": 500,
    "mbpo.updates_per_step": 4,
    "mbpo.rollout_schedule": [0, 2, 1, 1],
    "model.hidden_width": 32,
    "model.max_fit_epochs": 3,
    "sac.hidden_width": 32,
    "sac.batch_size": 64,
}
TINY_BY_ALGORITHM: Dict[str, Dict[str, Any]] = {
    "pets": {"pets.horizon": 5, "pets.population": 50, "pets.num_elites": 5, "pets.iterations": 2,
             "pets.num_particles": 2},
    "steve": {"steve.model_hidden_width": 32},
}
W_AND_B_INIT_TIMEOUT_S = 5.0


def scaled_study(study: Study, storage_shared: bool) -> Study:
    """``study`` cut down (the module docstring says how); ``storage_shared`` marks a local
    folder as shared by every node (the rehearsal's stand-in for NFS)."""
    study.name = f"{study.name}-rehearsal"
    study.envs = study.envs[:1]
    study.seeds = study.seeds[:max(1, min(len(study.seeds), study.seeds_per_trial))]
    study.env_steps = EPOCH_LENGTH * EPOCHS
    study.time_budget_s = None
    study.search = {}
    study.samples = 1
    study.variants = dict(list(study.variants.items())[:1])
    study.overrides_all = {**study.overrides_all, **TINY_FIELDS}
    if study.overrides_all.get("device") not in (None, "auto", "cpu"):
        study.overrides_all["device"] = "auto"  # GPUs are logical here: auto takes the CPU
    for algo, fields in TINY_BY_ALGORITHM.items():
        if algo in study.algorithms:
            study.overrides_algorithms[algo] = {**study.overrides_algorithms.get(algo, {}), **fields}
    if study.scheduler == "asha":
        study.grace_period = EPOCH_LENGTH * 2
    study.max_concurrent_trials = 1  # a 2-core machine: one trial's processes at a time
    study.max_failures = max(study.max_failures, 2)  # the node lost on purpose costs one
    study.storage_shared = storage_shared or study.storage_shared
    study.wandb.init_timeout = min(study.wandb.init_timeout, W_AND_B_INIT_TIMEOUT_S)
    validate_study(study)
    return study


def write_scaled_study(source: Path, target: Path, storage_shared: bool) -> Study:
    study = scaled_study(load_study(source), storage_shared)
    target.write_text(dump_study(study))
    return study
