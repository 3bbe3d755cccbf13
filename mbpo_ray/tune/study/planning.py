"""A study's trials: its cells, their names, each trial's config and what it asks of the cluster,
and the validation of every trial's config before anything runs."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple


from mbpo_ray.config import TrainConfig, make_config
from mbpo_ray.errors import ConfigError
from mbpo_ray.runtime.ray.capacity import total
from mbpo_ray.group_dir import GROUP_ALGOS, check_group_config, format_seeds
from mbpo_ray.tune.study.model import DRIVER_CPUS, Cell, Study, StudyError, fail


# --- trials --------------------------------------------------------------------------------------

# What a trial's name may hold: it is a folder name on every storage (Ray refuses a trial
# folder with '/') and part of W&B run names.
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def name_part(env: str) -> str:
    """An env id as part of a trial name: kept as it is when it holds only letters, digits, '.',
    '_' and '-'; else each other character becomes '_' and a short hash of the id follows, so
    that two ids never share a name (``dm_control/cartpole-swingup-v0`` ->
    ``dm_control_cartpole-swingup-v0-<6 hex>``). The id itself is kept verbatim in the trial's
    config and in the report."""
    if not _UNSAFE_IN_NAME.search(env):
        return env
    return f"{_UNSAFE_IN_NAME.sub('_', env)}-{hashlib.sha1(env.encode()).hexdigest()[:6]}"


def cell_name(algo: str, env: str, seeds: Sequence[int], variant: Optional[str]) -> str:
    """``algo-env-seedN`` (or ``algo-env-seedsA-B`` for packed seeds, ``format_seeds`` with '_'
    for ','), with the variant after the algorithm and the env as ``name_part`` gives it: the
    trial's folder, its Tune trial name and its W&B run name."""
    where = f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + format_seeds(list(seeds)).replace(",", "_")
    return f"{algo}{'-' + variant if variant else ''}-{name_part(env)}-{where}"


def packs(study: Study, algo: str, runtime: Any) -> List[List[int]]:
    """The study's seeds as the trials of one (algorithm, env, variant) take them: in runs of
    ``seeds_per_trial`` in the study's order where the trial can be a seed group (mbpo or sac
    on the local runtime), else one each."""
    size = study.seeds_per_trial if algo in GROUP_ALGOS and runtime == "local" else 1
    return [study.seeds[i:i + size] for i in range(0, len(study.seeds), size)]


def cells(study: Study) -> List[Cell]:
    """Every (algorithm, env, seed or packed seeds, variant) of the study, with its overrides in
    the order they apply: the sweep default torch_threads=1, budget.env_steps, overrides.all,
    overrides.envs[env], overrides.algorithms[algo], the variant (docs/sweeps.md)."""
    variants: List[Tuple[Optional[str], Dict[str, Any]]] = list(study.variants.items()) or [(None, {})]
    runtime_default = TrainConfig().runtime  # no preset sets it
    out = []
    for env in study.envs:
        for vname, vspec in variants:
            algos = [vspec["algo"]] if "algo" in vspec else study.algorithms
            for algo in algos:
                overrides: Dict[str, Any] = {}
                origin: Dict[str, str] = {}
                layers = [({"torch_threads": 1}, "(the sweep default torch_threads: 1)"),
                          ({"total_steps": study.env_steps} if study.env_steps else {}, "budget"),
                          (study.overrides_all, "overrides.all"),
                          (study.overrides_envs.get(env, {}), f"overrides.envs.{env}"),
                          (study.overrides_algorithms.get(algo, {}), f"overrides.algorithms.{algo}"),
                          ({k: v for k, v in vspec.items() if k != "algo"}, f"variants.{vname}")]
                for layer, path in layers:
                    for key, value in layer.items():
                        overrides[key] = value
                        origin[key] = "budget.env_steps" if path == "budget" else (
                            path if path.startswith("(") else f"{path}.{key}")
                if vname:  # the report groups a study's runs by algorithm and label
                    overrides["label"] = vname
                for seeds in packs(study, algo, overrides.get("runtime", runtime_default)):
                    out.append(Cell(cell_name(algo, env, seeds, vname), algo, env, seeds, vname,
                                    {**overrides, "algo": algo, "seed": seeds[0]}, dict(origin),
                                    study.gpus_per_trial))
    return out


def trial_config(cell: Dict[str, Any], search: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The validated TrainConfig of one trial: the env's preset, the algorithm's preset, the
    cell's overrides, then the search spaces' values (``cell`` is ``Cell.to_plain()``)."""
    return make_config(cell["env"], {**cell["overrides"], **(search or {})})


def trial_bundles(cfg: TrainConfig, gpus_per_trial: float) -> List[Dict[str, float]]:
    """The placement-group bundles of one trial. Local runtime: one bundle, the trial process,
    with ``torch_threads`` CPUs and ``gpus_per_trial`` GPUs. Ray runtime: the trial process
    (the run's driver, ``DRIVER_CPUS``), then one bundle per actor of its group, so that the
    whole group is reserved before the trial starts (docs/sweeps.md, "Resources")."""
    if cfg.runtime == "ray":
        from mbpo_ray.runtime.ray.cluster import actor_bundles  # the group's one description

        return [{"CPU": DRIVER_CPUS}] + actor_bundles(cfg)
    bundle = {"CPU": float(cfg.torch_threads or 1)}
    if gpus_per_trial > 0:
        bundle["GPU"] = float(gpus_per_trial)
    return [bundle]


@dataclass
class CellPlan:
    """A validated cell: its trials' largest resource needs (search spaces may change them)."""

    cell: Cell
    bundles: List[Dict[str, float]]  # the bundles of its largest trial
    cfg: TrainConfig  # the config of its first trial

    @property
    def runtime(self) -> str:
        return self.cfg.runtime

    @property
    def total_steps(self) -> int:
        return self.cfg.total_steps


def validation_points(study: Study) -> List[Tuple[Dict[str, Any], str]]:
    """Search values that stand for the whole search: each grid combination (random spaces at
    their first representative), and each representative of each random space (grids at their
    first combination). Each with the study key path to blame for an error."""
    randoms = {k: s for k, s in study.search.items() if s.kind != "grid"}
    first_random = {k: s.representatives()[0] for k, s in randoms.items()}
    grid = study.grid_points()
    points = [({**g, **first_random}, "search") for g in grid]
    for key, space in randoms.items():
        for value in space.representatives():
            points.append(({**grid[0], **first_random, key: value}, f"search.{key}"))
    return points


def _blame(exc: ConfigError, cell: Cell, search: Dict[str, Any], where: str) -> StudyError:
    """The study key path behind a config error: the search space or override that set the
    field the message starts with, else the cell."""
    message = str(exc)
    named = re.match(r"^([A-Za-z_][\w.]*)(=|:| )", message)
    field_name = named.group(1) if named else None
    if field_name in search:
        return fail(f"search.{field_name}", f"value {search[field_name]!r}: {message}")
    if field_name in cell.origin and not cell.origin[field_name].startswith("("):
        return fail(cell.origin[field_name], f"{message} (trial {cell.name})")
    if where.startswith("search."):
        key = where[len("search."):]
        return fail(where, f"value {search.get(key)!r}: {message} (trial {cell.name})")
    return fail(f"trial {cell.name}", message)


def validate_study(study: Study) -> List[CellPlan]:
    """Build every trial's config (each search representative) and validate it; add the sweep's
    own rules (devices, GPUs per trial, ASHA's grace period). Returns the cells with their
    largest resource needs."""
    plans = []
    points = validation_points(study)
    for cell in cells(study):
        largest: Optional[List[Dict[str, float]]] = None
        first: Optional[TrainConfig] = None
        for search, where in points:
            try:
                cfg = trial_config(cell.to_plain(), search)
            except ConfigError as exc:
                raise _blame(exc, cell, search, where) from None
            _check_devices(cfg, study, cell)
            if len(cell.seeds) > 1:
                try:
                    check_group_config(cfg)
                except ConfigError as exc:
                    raise fail("seeds_per_trial", f"{study.seeds_per_trial} packs the seeds of trial "
                                                  f"{cell.name}, but {exc}") from None
            first = first or cfg
            bundles = trial_bundles(cfg, study.gpus_per_trial)
            if largest is None or _bigger(total(bundles), total(largest)):
                largest = bundles
        plans.append(CellPlan(cell, largest, first))
    if study.scheduler == "asha":
        longest = max(p.total_steps for p in plans)
        if study.grace_period is not None and study.grace_period > longest:
            raise fail("scheduler.grace_period", f"{study.grace_period} is not allowed: at most the "
                                                 f"longest trial's total_steps ({longest}); ASHA counts env steps")
    return plans


def _bigger(a: Dict[str, float], b: Dict[str, float]) -> bool:
    return (a.get("GPU", 0), a.get("CPU", 0)) > (b.get("GPU", 0), b.get("CPU", 0))


def _check_devices(cfg: TrainConfig, study: Study, cell: Cell) -> None:
    """In a sweep Ray assigns GPUs: a trial names no GPU index, and asks for the GPUs it uses."""
    device_path = cell.origin.get("device", "overrides.all.device")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise fail(device_path, f"device={cfg.device!r} is not allowed in a sweep: Ray assigns GPUs to "
                                f"trials; use auto, cpu or cuda (trial {cell.name})")
    if cfg.runtime == "ray":
        if study.gpus_per_trial > 0:
            raise fail("gpus_per_trial", f"{study.gpus_per_trial!r} is not allowed for runtime=ray trials "
                                         f"(trial {cell.name}): their actors ask for GPUs with ray.*_gpus; "
                                         f"set gpus_per_trial: 0")
        return
    if cfg.device == "cuda" and study.gpus_per_trial <= 0:
        raise fail("gpus_per_trial", f"0 is not allowed with device=cuda (trial {cell.name}): a trial gets a "
                                     f"GPU only by asking for one; set gpus_per_trial above 0, or device auto/cpu")
    if cfg.device == "cpu" and study.gpus_per_trial > 0:
        raise fail("gpus_per_trial", f"{study.gpus_per_trial!r} is not allowed with device=cpu (trial "
                                     f"{cell.name}): set it to 0, or use device auto or cuda")


def resource_fields(runtime: str, resource: str) -> str:
    """The study keys that set a trial's need of ``resource`` (for error messages)."""
    if runtime == "ray":
        return {"CPU": "ray.*_cpus, ray.num_collectors, ray.num_rollout_workers",
                "GPU": "ray.*_gpus"}.get(resource, "ray.worker_node_resource, ray.learner_node_resource")
    return {"CPU": "torch_threads", "GPU": "gpus_per_trial"}.get(resource, resource)
