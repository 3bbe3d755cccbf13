"""Start, resume and checkpoint a training run in a run directory (``mbpo_ray.driver`` steps it)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from mbpo_ray.algos import Algorithm, make_algorithm
from mbpo_ray.config import TrainConfig, validate
from mbpo_ray.devices import resolve_device
from mbpo_ray.driver import SeedRun, TrainHook, TrainResult, drive
from mbpo_ray.envs import prepare_config
from mbpo_ray.process_setup import set_up as set_up_process
from mbpo_ray.rng import rng_state, seed_everything, set_rng_state
from mbpo_ray.run_dir import RunDirectory


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

    set_up_process(cfg.torch_threads)
    seed_everything(cfg.seed)
    algo = make_algorithm(cfg, device, run.path)  # the directory is written only once this works
    single = SingleRun(SeedRun(cfg.seed, cfg, algo, run, hooks))
    try:
        if checkpoint is None:
            run.create(cfg)
        else:
            set_rng_state(single.runs[0].restore(checkpoint))
        single.runs[0].start_hooks()
        (result,) = drive(single, f"{algo.title} {cfg.env_id} seed {cfg.seed}", progress, stop_at)
        return result
    finally:
        algo.close()


class SingleRun:
    """One run, as the driver steps it (``mbpo_ray.driver.Driven``)."""

    def __init__(self, seed_run: SeedRun):
        self.cfg, self.runs = seed_run.cfg, [seed_run]

    @property
    def env_steps(self) -> int:
        return self.runs[0].algo.env_steps

    def step(self) -> List[Optional[Dict[str, Any]]]:
        return [self.runs[0].algo.step()]

    def save_checkpoints(self, keep_copy: bool) -> None:
        save_checkpoint(self.runs[0].run, self.runs[0].algo, keep_copy)

    def summary(self, state: str, steps_per_s: float) -> str:
        seed_run = self.runs[0]
        return (f"{state} at {self.env_steps} env steps ({steps_per_s:.1f} steps/s); "
                f"last eval return {seed_run.algo.last_eval}; run directory {seed_run.run.path}")


