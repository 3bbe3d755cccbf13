"""The `mbpo-ray analyze KIND RUN_DIR` command line and its checks (docs/diagnostics.md).

No torch, numpy or matplotlib here: the CLI builds its parser from this module at every start,
and a bad option is refused before the analyses' libraries are loaded. Each analysis has a
parameter dataclass below; ``--param KEY=VALUE`` (or ``KIND.KEY=VALUE``) sets one field."""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mbpo_ray.errors import RunDirError

KINDS = ("compounding", "bound", "shift", "exploitation", "disagreement", "flow")
COMMANDS = KINDS + ("report",)
# The order in which `report` runs them: bound after shift, whose slope it uses.
REPORT_ORDER = ("flow", "compounding", "disagreement", "shift", "bound", "exploitation")


class DiagnosticsError(RunDirError):
    """An analysis cannot be made as asked: a bad option, a missing or unusable run directory, a
    run without what the analysis needs. The CLI prints the message on one line (status 2)."""


# --- parameters of each analysis (docs/diagnostics.md lists them with their meaning) ---------------

@dataclass
class CompoundingParams:
    episodes: int = 5
    """real episodes of the run's policy whose states start the open-loop rollouts"""
    max_episode_steps: int = 1000
    """longest of those episodes"""
    starts: int = 50
    """start states, spread evenly over the episodes"""
    horizon: int = 20
    """largest k"""
    particles: int = 20
    """random-elite rollouts per start state (MBPO's composition)"""
    deterministic: bool = False
    """act with the policy's mean instead of sampling (the run's rollouts sample)"""
    seed: int = 0
    """seed of the episodes and of the model's draws"""


@dataclass
class BoundParams:
    k_max: int = 30
    """largest k on the curve"""


@dataclass
class ShiftParams:
    data_sizes: Tuple[int, ...] = (1000, 2000, 4000)
    """transitions of the data-collecting policy each model is trained on"""
    policies: int = 5
    """policies at increasing distance from the data-collecting one"""
    updates_per_policy: int = 500
    """SAC updates (MBPO's mixed batches of D_env and rollouts in the run's frozen model) between two
    of those policies"""
    eval_steps: int = 1000
    """real transitions of each policy on which the models are scored"""
    fit_epochs: int = 50
    """cap on the epochs of each model fit (early stopping as in training)"""
    seed: int = 0
    """seed of the episodes, the fits and the updates"""


@dataclass
class ExploitationParams:
    particles: int = 1000
    """model replays of each policy's action sequence (the paper's Figure 4: 1000)"""
    horizon: int = 1000
    """longest real episode"""
    max_checkpoints: int = 30
    """kept checkpoints used, spread evenly (the last always)"""
    seed: int = 0
    """seed of the real episode's start and of the model's draws"""


@dataclass
class DisagreementParams:
    episodes: int = 3
    """real episodes of the run's policy along which the spread is measured"""
    max_episode_steps: int = 1000
    """longest of those episodes"""
    neighbours: int = 10
    """k of the k-nearest-neighbour distance to D_env"""
    max_data: int = 50_000
    """D_env rows used as the reference set (evenly strided when D_env holds more)"""
    probes: int = 500
    """D_env rows moved away from the data for the far-from-data probe"""
    shifts: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    """distances (in standardised input units) by which the probe rows are moved"""
    deterministic: bool = False
    """act with the policy's mean instead of sampling"""
    seed: int = 0
    """seed of the episodes and of the probe directions"""


@dataclass
class FlowParams:
    epochs: int = 5
    """the rates are averaged over the run's last this many epoch records after the warm-up"""


PARAMS = {"compounding": CompoundingParams, "bound": BoundParams, "shift": ShiftParams,
          "exploitation": ExploitationParams, "disagreement": DisagreementParams, "flow": FlowParams}


@dataclass
class BoundInputs:
    """The bound's inputs given on the command line (None: not given)."""

    eps_model: Optional[float] = None
    eps_pi: Optional[float] = None
    gamma: Optional[float] = None
    r_max: Optional[float] = None
    slope: Optional[float] = None


@dataclass
class AnalyzeOptions:
    command: str
    run_dir: Optional[Path]
    out: Path
    device: str = "cpu"
    params: Dict[str, Any] = field(default_factory=dict)  # kind -> its params dataclass
    bound: BoundInputs = field(default_factory=BoundInputs)


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", metavar="KIND", help=f"one of {', '.join(COMMANDS)}")
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="run directory of `mbpo-ray train` (optional for bound)")
    parser.add_argument("--out", metavar="DIR", help="folder for KIND.png and KIND.json (default: "
                        "RUN_DIR/diagnostics, or ./diagnostics without RUN_DIR)")
    parser.add_argument("--device", default="cpu", help="device of the analysis: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the analysis (KIND.KEY=VALUE for report), e.g. horizon=30 "
                             "(repeatable; docs/diagnostics.md lists them)")
    parser.add_argument("--eps-model", type=float, help="bound: model error eps_m")
    parser.add_argument("--eps-pi", type=float, help="bound: policy shift eps_pi")
    parser.add_argument("--gamma", type=float, help="bound: discount, 0 < gamma < 1")
    parser.add_argument("--r-max", type=float, help="bound: reward bound r_max > 0")
    parser.add_argument("--slope", type=float, help="bound: d eps_m' / d eps_pi, the model error's growth "
                                                    "with policy shift (default: shift.json in --out, else 0)")


def _coerce(name: str, text: str, hint) -> Any:
    origin = typing.get_origin(hint)
    if origin in (tuple, Tuple):
        inner = typing.get_args(hint)[0]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise DiagnosticsError(f"--param {name}={text!r}: expected a comma-separated list")
        return tuple(_coerce(name, p, inner) for p in parts)
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise DiagnosticsError(f"--param {name}={text!r}: expected true or false")
    try:
        value = hint(text)
    except ValueError:
        raise DiagnosticsError(f"--param {name}={text!r}: expected {'an integer' if hint is int else 'a number'}") \
            from None
    if hint is float and not math.isfinite(value):
        raise DiagnosticsError(f"--param {name}={text!r}: expected a finite number")
    return value


def _check_params(kind: str, params: Any) -> None:
    """Every count is positive (seeds and shifts may be 0 or more)."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool):
                continue
            smallest = 0 if f.name in ("seed", "shifts") else 1
            if v < smallest:
                raise DiagnosticsError(f"--param {kind}.{f.name}={v!r} is not allowed: "
                                       f"{'0 or more' if smallest == 0 else 'at least 1'}")
        if f.name == "seed" and value >= 2 ** 32:
            raise DiagnosticsError(f"--param {kind}.seed={value!r} is not allowed: 0 <= seed < 2**32")


def parse_params(command: str, texts: List[str]) -> Dict[str, Any]:
    """The params of every kind ``command`` runs, with ``--param`` applied."""
    kinds = REPORT_ORDER if command == "report" else (command,)
    params = {kind: PARAMS[kind]() for kind in kinds}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise DiagnosticsError(f"--param {text!r}: expected KEY=VALUE, e.g. horizon=30")
        key = key.strip()
        kind, dot, name = key.rpartition(".")
        if not dot:
            if command == "report":
                raise DiagnosticsError(f"--param {text!r}: with report, name the analysis: KIND.KEY=VALUE, "
                                       f"e.g. compounding.horizon=30")
            kind = command
        if kind not in params:
            raise DiagnosticsError(f"--param {text!r}: {kind!r} is not an analysis this command runs "
                                   f"(it runs {', '.join(params)})")
        hints = typing.get_type_hints(PARAMS[kind])
        if name not in hints:
            raise DiagnosticsError(f"--param {text!r}: {kind} has no parameter {name!r}; its parameters: "
                                   f"{', '.join(hints)}")
        setattr(params[kind], name, _coerce(key, value.strip(), hints[name]))
    for kind, p in params.items():
        _check_params(kind, p)
    return params


def check_bound_inputs(inputs: BoundInputs) -> None:
    """The bound's inputs, where given, lie in their ranges (docs/diagnostics.md#bound)."""
    checks = (("--eps-model", inputs.eps_model, lambda v: v >= 0, "0 or more"),
              ("--eps-pi", inputs.eps_pi, lambda v: v >= 0, "0 or more"),
              ("--gamma", inputs.gamma, lambda v: 0 < v < 1, "strictly between 0 and 1"),
              ("--r-max", inputs.r_max, lambda v: v > 0, "above 0"),
              ("--slope", inputs.slope, lambda v: v >= 0, "0 or more"))
    for option, value, ok, allowed in checks:
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise DiagnosticsError(f"{option} {value!r} is not allowed: a finite number, {allowed}")


def parse_analyze(args: argparse.Namespace) -> AnalyzeOptions:
    """The checked options; DiagnosticsError naming the option and what is allowed otherwise."""
    command = args.kind
    if command not in COMMANDS:
        raise DiagnosticsError(f"analyze {command!r}: unknown KIND; allowed: {', '.join(COMMANDS)}")
    run_dir = Path(args.run_dir) if args.run_dir else None
    bound = BoundInputs(args.eps_model, args.eps_pi, args.gamma, args.r_max, args.slope)
    given = [name for name, v in dataclasses.asdict(bound).items() if v is not None]
    if given and command not in ("bound", "report"):
        raise DiagnosticsError(f"--eps-model, --eps-pi, --gamma, --r-max and --slope belong to bound and "
                               f"report, not to {command}")
    check_bound_inputs(bound)
    if run_dir is None:
        if command != "bound":
            raise DiagnosticsError(f"analyze {command} needs RUN_DIR (a run directory of `mbpo-ray train`)")
        missing = [o for o, v in (("--eps-model", bound.eps_model), ("--eps-pi", bound.eps_pi),
                                  ("--gamma", bound.gamma), ("--r-max", bound.r_max)) if v is None]
        if missing:
            raise DiagnosticsError(f"analyze bound without RUN_DIR needs --eps-model, --eps-pi, --gamma and "
                                   f"--r-max (missing: {', '.join(missing)})")
    elif not run_dir.is_dir():
        raise DiagnosticsError(f"RUN_DIR {run_dir}: no such directory (expected a run directory of "
                               f"`mbpo-ray train`)")
    out = Path(args.out) if args.out else (run_dir / "diagnostics" if run_dir else Path("diagnostics"))
    if out.exists() and not out.is_dir():
        raise DiagnosticsError(f"--out {out} exists and is not a directory")
    return AnalyzeOptions(command=command, run_dir=run_dir, out=out, device=args.device,
                          params=parse_params(command, args.param), bound=bound)
