"""`mbpo-ray train ...`: the command line maps onto TrainConfig (see mbpo_ray.config).

A bad command line is refused before torch or gymnasium is imported: this module imports only
the config and the run directory; mbpo_ray.train (torch) is imported once the config is valid,
and the env is made (checked) there before anything is written."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

import yaml

from mbpo_ray.config import (ALGOS, ENV_ID_HELP, SUPPORTED_ENVS, ConfigError, ConfigFile, TrainConfig,
                             apply_overrides, load_config_file, make_config, parse_override, to_dict, validate)
from mbpo_ray.analysis.report.options import add_report_arguments
from mbpo_ray.diagnostics.params import add_analyze_arguments
from mbpo_ray.errors import RunDirError
from mbpo_ray.rehearsal.command import add_cluster_arguments
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.group_dir import GroupDirectory, check_group_config, parse_seeds
from mbpo_ray.tune.command import add_sweep_arguments
from mbpo_ray.video.command import add_video_arguments
from mbpo_ray.wandb_log import add_wandb_arguments


# What a resumed run may change: everything else would make it a different experiment. The CUDA
# graph switches take the same steps as without them (docs/architecture.md#cuda-graphs).
RESUMABLE_FIELDS = ("total_steps", "device", "torch_threads", "ray.address", "keep_checkpoints_every",
                    "video_every_epochs", "sac.cuda_graph", "model.cuda_graph")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbpo-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one algorithm on one env (a new run, or --resume one)")
    train.add_argument("--env", help=f"env id: {ENV_ID_HELP}")
    train.add_argument("--config", metavar="FILE.yaml", help="config file (the fields of a run's config.yaml, "
                       "and presets: per env); the other options apply on top of it")
    train.add_argument("--env-kwargs", nargs="+", metavar="KEY=VALUE", help="the env's keyword arguments: "
                       "key=value pairs or one JSON object (e.g. max_episode_steps=200)")
    train.add_argument("--algo", help=f"algorithm, one of: {', '.join(ALGOS)} (default mbpo)")
    train.add_argument("--runtime", help="local (one process, default) or ray (actors; mbpo and sac)")
    train.add_argument("--schedule", help="with --runtime ray: sync (the paper's order, default) or async")
    train.add_argument("--address", help="with --runtime ray: join this Ray cluster (default: RAY_ADDRESS, "
                                         "else start Ray in-process)")
    train.add_argument("--steps", type=int, help="total env steps (default: the env preset's budget)")
    train.add_argument("--seed", type=int, help="random seed, 0 <= seed < 2**32 (default 0)")
    train.add_argument("--seeds", metavar="SEEDS", help="train several seeds in one process, their agent updates "
                       "stacked (e.g. 0-7 or 0,2,5): one run directory each, --out/seed<N> "
                       "(docs/seed_groups.md); mbpo and sac on the local runtime")
    train.add_argument("--out", help="run directory to create (must be empty or absent)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a config field, e.g. --set mbpo.updates_per_step=5 (repeatable)")
    train.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_wandb_arguments(train, train=True)
    add_sweep_arguments(sub.add_parser(
        "sweep", help="run a study (algorithms x envs x seeds x search spaces) as Ray Tune trials (docs/sweeps.md)"))
    sub.add_parser("envs", help="list the paper envs (those with a paper preset and a known termination rule)")
    show = sub.add_parser("config", help="show the resolved config of a run").add_subparsers(
        dest="config_command", required=True).add_parser(
        "show", help="print the resolved config (config.yaml's format) of --env and --algo")
    show.add_argument("--env", help=f"env id (default: the config file's, else {TrainConfig.env_id})")
    show.add_argument("--algo", help=f"algorithm, one of: {', '.join(ALGOS)} (default mbpo)")
    show.add_argument("--config", metavar="FILE.yaml", help="config file, as for train")
    show.add_argument("--env-kwargs", nargs="+", metavar="KEY=VALUE", help="the env's keyword arguments")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a config field (repeatable)")
    add_report_arguments(sub.add_parser(
        "report", help="compare runs: learning curves, final scores, IQM, probability of improvement, "
                       "performance profiles, steps to threshold, sample efficiency (docs/report.md)"))
    add_cluster_arguments(sub.add_parser(
        "cluster", help="cluster files: rehearse one on this machine before its first `ray up` (docs/clusters.md)"))
    add_analyze_arguments(sub.add_parser(
        "analyze", help="the MBPO paper's analysis on a run: compounding error, the bound and k*, model error "
                        "under policy shift, exploitation, ensemble disagreement, data flow; report bundles "
                        "them (docs/diagnostics.md)"))
    add_video_arguments(sub.add_parser(
        "video", help="film a run's policy in its env, and with --dream the model's dream beside reality "
                      "(docs/video.md)"))
    return parser


# Options that set one config field each (they apply after --set).
FLAG_FIELDS = (("algo", "algo"), ("runtime", "runtime"), ("schedule", "ray.schedule"), ("address", "ray.address"),
               ("steps", "total_steps"), ("seed", "seed"), ("device", "device"))


def parse_env_kwargs(tokens: List[str]) -> Dict[str, Any]:
    """--env-kwargs: one JSON object, or key=value pairs (each value read as YAML, as --set's)."""
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        try:
            value = json.loads(tokens[0])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--env-kwargs {tokens[0]!r} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--env-kwargs {tokens[0]!r}: expected a JSON object")
        return value
    out: Dict[str, Any] = {}
    for token in tokens:
        if "=" not in token:
            raise ConfigError(f"--env-kwargs {token!r}: expected key=value pairs or one JSON object, "
                              f"e.g. --env-kwargs max_episode_steps=200 g=9.81")
        key, value = parse_override(token)
        out[key] = value
    return out


def _flag_overrides(args, overrides: Dict[str, Any]) -> Dict[str, Any]:
    for flag, key in FLAG_FIELDS:
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    return overrides


def requested_config(args) -> Tuple[Optional[str], Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(env id, overrides, env presets) of a command line: the config file's fields, then
    --env-kwargs (merged into the file's env_kwargs), then --set, then the single-field flags;
    --env picks the env over an env_id of --set or the file."""
    file = load_config_file(args.config) if args.config else ConfigFile()
    overrides = dict(file.fields)
    env_id = overrides.pop("env_id", None)
    if args.env_kwargs is not None:
        overrides["env_kwargs"] = {**(overrides.get("env_kwargs") or {}), **parse_env_kwargs(args.env_kwargs)}
    overrides.update(parse_override(o) for o in args.overrides)
    env_id = overrides.pop("env_id", env_id)
    return args.env or env_id, _flag_overrides(args, overrides), file.presets


def _show(args) -> int:
    env_id, overrides, presets = requested_config(args)
    cfg = make_config(env_id or TrainConfig.env_id, overrides, presets)
    from mbpo_ray.envs import prepare_config  # gymnasium: only once the config is known good

    cfg, _ = prepare_config(cfg)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def _start(cfg, out_dir: str, args=None, **kwargs) -> int:
    from mbpo_ray.train import train  # torch and gymnasium: only once the config is known good
    from mbpo_ray.wandb_log import train_hooks

    hooks = train_hooks(args, cfg, out_dir) if args is not None else []
    return 0 if train(cfg, out_dir, hooks=hooks, **kwargs).completed else 130


def _start_group(cfg, seeds, out_dir: str, args, **kwargs) -> int:
    from mbpo_ray.seed_group import train_group  # torch and gymnasium: only once the config is known good
    from mbpo_ray.wandb_log import group_hooks

    hooks = group_hooks(args, cfg, seeds, out_dir)
    return 0 if train_group(cfg, seeds, out_dir, progress=not args.no_progress, hooks=hooks, **kwargs).completed else 130


def _resume_overrides(args) -> Dict[str, Any]:
    overrides = _flag_overrides(args, dict(parse_override(o) for o in args.overrides))
    unsafe = sorted(k for k in overrides if k not in RESUMABLE_FIELDS)
    if unsafe:
        raise ConfigError(f"--resume may only change {', '.join(RESUMABLE_FIELDS)}; "
                          f"not {', '.join(unsafe)}")
    return overrides


def _nothing_left(args, done: int, total: int) -> bool:
    """A resumed run with no env steps left: whether to stop here. With --wandb at the run's end
    it goes on (False): the W&B run gets the epochs and the curve it lacks, say after a kill as
    the run ended."""
    asked = f"--steps {args.steps}" if args.steps is not None else f"total_steps {total}"
    go_on = args.wandb and done == total
    print(f"mbpo-ray: the run in {args.resume} is already at {done} env steps "
          f"({'past' if done > total else 'at'} {asked}); {'sending W&B what it lacks' if go_on else 'nothing to do'}",
          file=sys.stderr)
    return not go_on


def _resume_group(args, group: GroupDirectory) -> int:
    overrides = _resume_overrides(args)
    configs = group.load_configs()
    for cfg in configs.values():
        apply_overrides(cfg, overrides)
        validate(cfg)
    seeds = list(configs)
    checkpoints = group.load_checkpoints(seeds)  # clear errors first
    done = min(c["env_steps"] for c in checkpoints.values())
    cfg = configs[seeds[0]]
    if done >= cfg.total_steps and _nothing_left(args, done, cfg.total_steps):
        return 0
    return _start_group(cfg, seeds, args.resume, args, resume=True, configs=configs, checkpoints=checkpoints)


def _train(args) -> int:
    if args.resume:
        if args.env or args.out or args.config or args.env_kwargs is not None or args.seeds:
            raise ConfigError("--resume DIR continues the run in DIR with its own config: "
                              "leave out --env, --out, --config, --env-kwargs and --seeds")
        group = GroupDirectory(args.resume)
        if group.is_group():
            return _resume_group(args, group)
        overrides = _resume_overrides(args)
        run = RunDirectory(args.resume)
        cfg = run.load_config()
        apply_overrides(cfg, overrides)
        validate(cfg)
        checkpoint = run.load_checkpoint()  # a clear error before anything starts
        done = checkpoint["env_steps"]
        if done >= cfg.total_steps and _nothing_left(args, done, cfg.total_steps):
            return 0
        return _start(cfg, args.resume, args, resume=True, progress=not args.no_progress, checkpoint=checkpoint)
    env_id, overrides, presets = requested_config(args)
    if not env_id:
        raise ConfigError(f"--env is required (or env_id in --config): {ENV_ID_HELP}")
    if not args.out:
        raise ConfigError("--out DIR is required (the run directory to create)")
    seeds = None
    if args.seeds is not None:
        if args.seed is not None or any(o.split("=", 1)[0].strip() == "seed" for o in args.overrides):
            raise ConfigError("--seeds and --seed (or --set seed=...): give one of them")
        seeds = parse_seeds(args.seeds)
    cfg = make_config(env_id, overrides, presets)
    RunDirectory(args.out).check_new()
    if seeds is not None:
        check_group_config(cfg)
        return _start_group(cfg, seeds, args.out, args)
    return _start(cfg, args.out, args, progress=not args.no_progress)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "analyze":
            from mbpo_ray.diagnostics.command import run_analyze  # torch and matplotlib: only for an analysis

            return run_analyze(args)
        if args.command == "report":
            from mbpo_ray.analysis.report import run_report  # numpy and matplotlib: only for a report

            return run_report(args)
        if args.command == "envs":
            print("\n".join(SUPPORTED_ENVS))
            return 0
        if args.command == "config":
            return _show(args)
        if args.command == "cluster":
            from mbpo_ray.rehearsal.command import run_cluster_command

            return run_cluster_command(args)
        if args.command == "sweep":
            from mbpo_ray.tune.command import run_sweep_command

            return run_sweep_command(args)
        if args.command == "video":
            from mbpo_ray.video.command import run_video_command

            return run_video_command(args)
        return _train(args)
    except (ConfigError, RunDirError) as exc:
        print(f"mbpo-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
