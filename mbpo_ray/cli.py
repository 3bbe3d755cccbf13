"""`mbpo-ray train ...`: the command line maps onto TrainConfig (see mbpo_ray.config).

A bad command line is refused before torch or gymnasium is imported: this module imports only
the config and the run directory; mbpo_ray.train (torch) is imported once the config is valid."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mbpo_ray.config import (ALGOS, SUPPORTED_ENVS, ConfigError, apply_overrides, make_config,
                             parse_override, validate)
from mbpo_ray.errors import RunDirError
from mbpo_ray.run_dir import RunDirectory


# What a resumed run may change: everything else would make it a different experiment.
RESUMABLE_FIELDS = ("total_steps", "device", "torch_threads", "ray.address")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbpo-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one algorithm on one env (a new run, or --resume one)")
    train.add_argument("--env", help=f"env id, one of: {', '.join(SUPPORTED_ENVS)}")
    train.add_argument("--algo", help=f"algorithm, one of: {', '.join(ALGOS)} (default mbpo)")
    train.add_argument("--runtime", help="local (one process, default) or ray (actors; mbpo and sac)")
    train.add_argument("--schedule", help="with --runtime ray: sync (the paper's order, default) or async")
    train.add_argument("--address", help="with --runtime ray: join this Ray cluster (default: RAY_ADDRESS, "
                                         "else start Ray in-process)")
    train.add_argument("--steps", type=int, help="total env steps (default: the env preset's budget)")
    train.add_argument("--seed", type=int, help="random seed, 0 <= seed < 2**32 (default 0)")
    train.add_argument("--out", help="run directory to create (must be empty or absent)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a config field, e.g. --set mbpo.updates_per_step=5 (repeatable)")
    train.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("envs", help="list the supported env ids")
    return parser


def _start(cfg, out_dir: str, **kwargs) -> int:
    from mbpo_ray.train import train  # torch and gymnasium: only once the config is known good

    return 0 if train(cfg, out_dir, **kwargs).completed else 130


def _train(args) -> int:
    overrides = dict(parse_override(o) for o in args.overrides)
    for flag, key in (("algo", "algo"), ("runtime", "runtime"), ("schedule", "ray.schedule"),
                      ("address", "ray.address"), ("steps", "total_steps"), ("seed", "seed"),
                      ("device", "device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.resume:
        if args.env or args.out:
            raise ConfigError("--resume DIR continues the run in DIR with its own config: "
                              "leave out --env and --out")
        run = RunDirectory(args.resume)
        cfg = run.load_config()
        unsafe = sorted(k for k in overrides if k not in RESUMABLE_FIELDS)
        if unsafe:
            raise ConfigError(f"--resume may only change {', '.join(RESUMABLE_FIELDS)}; "
                              f"not {', '.join(unsafe)}")
        apply_overrides(cfg, overrides)
        validate(cfg)
        checkpoint = run.load_checkpoint()  # a clear error before anything starts
        done = checkpoint["env_steps"]
        if done >= cfg.total_steps:
            asked = f"--steps {args.steps}" if args.steps is not None else f"total_steps {cfg.total_steps}"
            print(f"mbpo-ray: the run in {args.resume} is already at {done} env steps "
                  f"({'past' if done > cfg.total_steps else 'at'} {asked}); nothing to do", file=sys.stderr)
            return 0
        return _start(cfg, args.resume, resume=True, progress=not args.no_progress, checkpoint=checkpoint)
    if not args.env:
        raise ConfigError(f"--env is required; one of: {', '.join(SUPPORTED_ENVS)}")
    if not args.out:
        raise ConfigError("--out DIR is required (the run directory to create)")
    cfg = make_config(args.env, overrides)
    RunDirectory(args.out).check_new()
    return _start(cfg, args.out, progress=not args.no_progress)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "envs":
            print("\n".join(SUPPORTED_ENVS))
            return 0
        return _train(args)
    except (ConfigError, RunDirError) as exc:
        print(f"mbpo-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
