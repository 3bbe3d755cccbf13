"""The `mbpo-ray report` command line and its checks (docs/report.md).

No numpy or matplotlib here: the CLI builds its parser from this module at every start, and a
bad option is refused before the report's libraries are loaded."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mbpo_ray.errors import RunDirError

X_AXES = ("env_steps", "learning_steps", "wall_seconds")
MIN_REPS = 100  # below this the 2.5 % and 97.5 % quantiles rest on one or two replicates


class ReportError(RunDirError):
    """The report cannot be made as asked: a bad option, an unreadable run directory, a corrupt
    metrics file. The CLI prints the message on one line and exits with status 2."""


@dataclass
class ReportOptions:
    dirs: List[Path]
    out: Path
    x_axis: str = "env_steps"
    final_window: int = 3
    reps: int = 10_000
    seed: int = 0
    level: float = 0.95
    threshold_levels: Tuple[float, ...] = (0.1, 0.25, 0.5, 0.9)
    thresholds: Dict[str, List[float]] = field(default_factory=dict)
    references: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    group_by: List[str] = field(default_factory=list)
    candidates: Optional[List[str]] = None
    videos: bool = False


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="study folders and run directories (searched recursively for run directories)")
    parser.add_argument("--out", metavar="DIR", help="folder for report.md, report.html and the PNGs (default: DIR/report "
                                      "when one DIR is given; an existing report there is replaced)")
    parser.add_argument("--x", dest="x_axis", default="env_steps", choices=X_AXES,
                        help="x axis of curves, thresholds and ratios: env_steps (warm-up included, "
                             "default), learning_steps (after the random warm-up, the MBPO paper's axis) or "
                             "wall_seconds (the run's wall-clock seconds, from perf/wall_seconds: the compute axis)")
    parser.add_argument("--final-window", type=int, default=3, metavar="N",
                        help="final score = mean eval/return_mean of a run's last N records (default 3)")
    parser.add_argument("--reps", type=int, default=10_000, help="bootstrap replicates (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--threshold-levels", metavar="L,L,...",
                        help="steps to threshold at these normalised scores (default 0.1,0.25,0.5,0.9)")
    parser.add_argument("--threshold", action="append", default=[], metavar="ENV=RETURN",
                        help="also a threshold in raw return for one env (repeatable)")
    parser.add_argument("--reference", action="append", default=[], metavar="ENV=RANDOM,REFERENCE",
                        help="the returns that score 0 and 1 for ENV, replacing the documented ones "
                             "(docs/published_results.md; repeatable)")
    parser.add_argument("--group-by", action="append", default=[], metavar="FIELD",
                        help="config field whose value splits an algorithm's runs into groups, e.g. "
                             "mbpo.real_ratio (repeatable)")
    parser.add_argument("--candidate", action="append", metavar="GROUP",
                        help="group compared with every other in probability of improvement and "
                             "sample-efficiency ratios (default: the mbpo groups; repeatable)")
    parser.add_argument("--videos", action="store_true",
                        help="a GIF of each group's final policy in each env (its first seed's checkpoint; "
                             "docs/video.md)")


def _env_value(text: str, option: str, form: str) -> Tuple[str, str]:
    env, sep, value = text.partition("=")
    if not sep or not env.strip() or not value.strip():
        raise ReportError(f"{option} {text!r}: expected {form}")
    return env.strip(), value.strip()


def _number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{option}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ReportError(f"{option}: {text!r} is not a finite number")
    return value


def parse_options(args: argparse.Namespace) -> ReportOptions:
    """The checked options; ReportError naming the option and what is allowed otherwise."""
    from mbpo_ray.config import TrainConfig, field_names

    dirs = [Path(d) for d in args.dirs]
    for d in dirs:
        if not d.is_dir():
            raise ReportError(f"{d}: no such directory (give study folders or run directories)")
    if args.out:
        out = Path(args.out)
    elif len(dirs) == 1:
        out = dirs[0] / "report"
    else:
        raise ReportError("--out DIR is required when more than one DIR is given")
    if args.final_window < 1:
        raise ReportError(f"--final-window {args.final_window}: must be at least 1")
    if args.reps < MIN_REPS:
        raise ReportError(f"--reps {args.reps}: must be at least {MIN_REPS}")
    if not 0 <= args.seed < 2 ** 32:
        raise ReportError(f"--seed {args.seed}: must satisfy 0 <= seed < 2**32")
    if not 0 < args.level < 1:
        raise ReportError(f"--level {args.level}: must lie strictly between 0 and 1")
    levels = ReportOptions.threshold_levels
    if args.threshold_levels is not None:
        levels = tuple(_number(t.strip(), "--threshold-levels") for t in args.threshold_levels.split(","))
    thresholds: Dict[str, List[float]] = {}
    for text in args.threshold:
        env, value = _env_value(text, "--threshold", "ENV=RETURN, e.g. Hopper-v5=1000")
        thresholds.setdefault(env, []).append(_number(value, "--threshold"))
    references: Dict[str, Tuple[float, float]] = {}
    for text in args.reference:
        form = "ENV=RANDOM,REFERENCE, e.g. Hopper-v5=16.7,3350"
        env, value = _env_value(text, "--reference", form)
        parts = value.split(",")
        if len(parts) != 2:
            raise ReportError(f"--reference {text!r}: expected {form}")
        random, reference = (_number(p, "--reference") for p in parts)
        if reference <= random:
            raise ReportError(f"--reference {text!r}: the reference return must be above the random one")
        references[env] = (random, reference)
    known = set(field_names(TrainConfig()))
    for name in args.group_by:
        if name not in known:
            raise ReportError(f"--group-by {name}: not a config field (docs/hyperparameters.md lists "
                              f"them), e.g. mbpo.real_ratio")
        if name in ("algo", "env_id", "seed"):
            raise ReportError(f"--group-by {name}: runs are always split by algorithm and env, and seeds "
                              f"are what a group averages over")
    return ReportOptions(dirs=dirs, out=out, x_axis=args.x_axis, final_window=args.final_window,
                         reps=args.reps, seed=args.seed, level=args.level, threshold_levels=levels,
                         thresholds=thresholds, references=references, group_by=list(args.group_by),
                         candidates=args.candidate, videos=bool(getattr(args, "videos", False)))
