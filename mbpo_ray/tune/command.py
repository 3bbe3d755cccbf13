"""`mbpo-ray sweep`'s command line (no Ray here: a bad study is refused before Ray loads)."""
from __future__ import annotations

from mbpo_ray.errors import ConfigError
from mbpo_ray.wandb_log import add_wandb_arguments, wandb_overrides


def add_sweep_arguments(parser) -> None:
    parser.add_argument("study", nargs="?", metavar="STUDY.yaml",
                        help="the study file (docs/sweeps.md; examples in tune_configs/)")
    parser.add_argument("--out", metavar="DIR", help="the study folder to create (default: the study's "
                        "storage/name); a local or NFS path, or s3://... / gs://...")
    parser.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else start Ray in-process)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the study and print the trial table (trials, resources per trial, "
                             "total); start and write nothing")
    parser.add_argument("--resume", metavar="DIR", help="continue the study in DIR (after the driver was "
                        "stopped or killed): finished trials stay, the others continue from their checkpoints")
    add_wandb_arguments(parser, train=False)


def run_sweep_command(args) -> int:
    if args.resume and (args.study or args.out):
        raise ConfigError("--resume DIR continues the study in DIR with its own study.yaml: "
                          "leave out STUDY.yaml and --out")
    if not args.resume and not args.study:
        raise ConfigError("a study file is required (mbpo-ray sweep STUDY.yaml), or --resume DIR")
    from mbpo_ray.tune.sweep import sweep  # Ray and torch: only past the command line

    return sweep(args.study, out=args.out, address=args.address, dry_run=args.dry_run, resume=args.resume,
                 wandb_overrides=wandb_overrides(args))
