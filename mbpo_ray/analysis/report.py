"""`mbpo-ray report DIR... [--out DIR]`: compare the runs found under study folders and run
directories (docs/report.md says what every number means and how it is computed).

Reading: every folder under each DIR that holds config.yaml and metrics.jsonl is a run directory
(mbpo_ray.run_dir). A metrics file that cannot be read is an error naming the file and line,
raised before anything is written. Runs that stopped before their config's total_steps, or have
no checkpoint.pt, are listed in the report; only the first kind is left out of the statistics.

Writing: report.md (figures as relative PNG links), report.html (figures embedded as base64 PNG,
one self-contained file) and the PNGs, all rendered in memory and then moved into --out in one
step, so an error never leaves a half-written report.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from mbpo_ray.analysis import stats
from mbpo_ray.analysis.options import ReportError, ReportOptions
from mbpo_ray.analysis.references import REFERENCES
from mbpo_ray.config import ALGOS, SUPPORTED_ENVS, TrainConfig, to_dict
from mbpo_ray.errors import RunDirError
from mbpo_ray.run_dir import RunDirectory

RETURN_KEY = "eval/return_mean"
AXIS_LABELS = {
    "env_steps": "env steps (uniform-random warm-up included)",
    "learning_steps": "learning steps (env steps after the random warm-up: the MBPO paper's axis)",
}
# Config fields that change where or how fast a run goes, not what it computes: runs of one group
# may differ in these without a note (the seed is what a group averages over).
NON_EXPERIMENT_FIELDS = ("seed", "device", "torch_threads", "checkpoint_every_epochs", "keep_checkpoints_every",
                         "ray.address", "ray.object_store_mb", "ray.worker_node_resource", "ray.learner_node_resource",
                         "ray.max_actor_restarts")
REPORT_FILES = ("report.md", "report.html")
PROFILE_CHUNK = 1000  # bootstrap replicates per chunk of the performance-profile bands (memory)


# --- reading ----------------------------------------------------------------------------------------

@dataclass
class Run:
    path: Path
    env: str  # env_id, followed by its env_kwargs when it has any
    env_id: str
    algo: str
    seed: int
    total_steps: int
    config: Dict[str, Any]
    records: List[Dict[str, Any]]
    has_checkpoint: bool
    group: str = ""
    problem: Optional[str] = None  # why the run is left out of the statistics
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    final: float = math.nan

    @property
    def steps_done(self) -> int:
        return self.records[-1]["env_steps"] if self.records else 0

    @property
    def used(self) -> bool:
        return self.problem is None


def _looks_like_run_config(path: Path) -> bool:
    """A config.yaml without metrics.jsonl counts as a run that has written no record yet when it is
    a mapping with env_id and algo (other tools' config.yaml files are not)."""
    try:
        flat = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(flat, dict) and "env_id" in flat and "algo" in flat


# Folders inside a run directory that other tools write and that are never run directories
# themselves: W&B's (an online run keeps the run's config in wandb/run-*/files/config.yaml).
NOT_RUN_FOLDERS = ("wandb",)


def find_run_dirs(dirs: Sequence[Path]) -> List[Path]:
    """Every run directory under each of ``dirs`` (a DIR that is one counts too), each once;
    nothing inside a ``NOT_RUN_FOLDERS`` folder."""
    found: Dict[Path, None] = {}
    for top in dirs:
        for config in sorted(Path(top).rglob("config.yaml")):
            folder = config.parent
            if any(part in NOT_RUN_FOLDERS for part in folder.relative_to(top).parts):
                continue
            if (folder / "metrics.jsonl").is_file() or _looks_like_run_config(config):
                found.setdefault(folder.resolve(), None)
    return list(found)


def _line_numbers(path: Path) -> List[int]:
    """The line number of each record (non-blank line) of a metrics file."""
    with open(path) as f:
        return [i for i, line in enumerate(f, 1) if line.strip()]


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_records(run_dir: RunDirectory) -> List[Dict[str, Any]]:
    """The records of a metrics file, checked: each a JSON object with an integer env_steps that
    grows from record to record, and a finite eval/return_mean where it has one. ReportError
    naming the file and line otherwise."""
    path = run_dir.metrics_path
    try:
        records = run_dir.read_metrics()
    except json.JSONDecodeError:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ReportError(f"{path}: line {number} is not valid JSON ({exc.msg}); "
                                          f"the metrics file is corrupt") from None
        raise ReportError(f"{path}: not valid JSON; the metrics file is corrupt") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    lines = _line_numbers(path) if records else []
    previous = -1
    for record, number in zip(records, lines):
        where = f"{path}: line {number}"
        if not isinstance(record, dict):
            raise ReportError(f"{where} is not a JSON object; the metrics file is corrupt")
        steps = record.get("env_steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ReportError(f"{where} has no env_steps count (a whole number >= 0); the metrics file is corrupt")
        if steps <= previous:
            raise ReportError(f"{where}: env_steps {steps} does not follow {previous} (records out of order "
                              f"or repeated); the metrics file is corrupt")
        previous = steps
        if RETURN_KEY in record and not _finite_number(record[RETURN_KEY]):
            raise ReportError(f"{where}: {RETURN_KEY} is {record[RETURN_KEY]!r}, not a finite number; "
                              f"the metrics file is corrupt")
    return records


@functools.lru_cache(maxsize=1)
def _default_fields() -> Dict[str, Any]:
    return to_dict(TrainConfig())


def load_run(path: Path) -> Run:
    run_dir = RunDirectory(path)
    try:
        cfg = run_dir.load_config()  # checks every field
    except RunDirError as exc:
        raise ReportError(str(exc)) from None
    # The fields as config.yaml has them (flat), a field it lacks (written before the field existed)
    # at its default, as load_config reads it: cheaper than to_dict(cfg) once per run.
    flat = {**_default_fields(), **yaml.safe_load(run_dir.config_path.read_text())}
    kwargs = getattr(cfg, "env_kwargs", None) or {}
    env = cfg.env_id + (" " + json.dumps(kwargs, sort_keys=True) if kwargs else "")
    return Run(path=Path(path), env=env, env_id=cfg.env_id, algo=cfg.algo, seed=cfg.seed,
               total_steps=cfg.total_steps, config=flat, records=read_records(run_dir),
               has_checkpoint=run_dir.checkpoint_path.is_file())


def _curve(run: Run, x_axis: str) -> Tuple[np.ndarray, np.ndarray]:
    """The run's evaluations against the chosen axis; of several records at one x (the warm-up's
    records all have learning_steps 0) the last one stands."""
    points: Dict[int, float] = {}
    for record in run.records:
        if RETURN_KEY not in record:
            continue
        x = record.get(x_axis)
        if not isinstance(x, int) or isinstance(x, bool) or x < 0:
            raise ReportError(f"{run.path / 'metrics.jsonl'}: a record at env_steps {record['env_steps']} has no "
                              f"{x_axis} (records written before that key existed); use --x env_steps")
        points[x] = float(record[RETURN_KEY])
    xs = np.array(sorted(points), dtype=float)
    return xs, np.array([points[int(x)] for x in xs], dtype=float)


def prepare_run(run: Run, options: ReportOptions) -> None:
    """Decide whether the run is used; for a used run, its curve and final score."""
    if not run.records:
        run.problem = f"no records yet (0 of {run.total_steps:,} env steps)"
    elif run.steps_done < run.total_steps:
        run.problem = f"stopped at {run.steps_done:,} of {run.total_steps:,} env steps"
    elif not any(RETURN_KEY in r for r in run.records):
        run.problem = f"no {RETURN_KEY} in its records"
    if run.problem is None:
        run.x, run.y = _curve(run, options.x_axis)
        evals = [r[RETURN_KEY] for r in run.records if RETURN_KEY in r]
        run.final = float(np.mean(evals[-options.final_window:]))


def group_label(run: Run, group_by: Sequence[str]) -> str:
    """``algo[-label] [field=value ...]``: the label is a study's variant (docs/sweeps.md)."""
    parts = [f"{name}={_format_value(run.config.get(name))}" for name in group_by]
    label = run.config.get("label")
    return " ".join([run.algo + (f"-{label}" if label else "")] + parts)


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


# --- formatting ---------------------------------------------------------------------------------------

def fmt_return(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def fmt_steps(v: float) -> str:
    return f"{v:,.0f}" if math.isfinite(v) else "not reached"


def fmt2(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "n/a"


def fmt_ratio(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "not reached"


def fmt_interval(point: float, lo: float, hi: float, fmt=fmt2) -> str:
    return f"{fmt(point)} [{fmt(lo)}, {fmt(hi)}]"


def _ordered_envs(envs) -> List[str]:
    def key(env: str):
        env_id = env.split(" ")[0]
        return (SUPPORTED_ENVS.index(env_id) if env_id in SUPPORTED_ENVS else len(SUPPORTED_ENVS), env)
    return sorted(set(envs), key=key)


def _ordered_groups(runs: Sequence[Run]) -> List[str]:
    algo_of = {r.group: r.algo for r in runs}
    return sorted(algo_of, key=lambda g: (ALGOS.index(algo_of[g]) if algo_of[g] in ALGOS else len(ALGOS), g))


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


# --- the document ---------------------------------------------------------------------------------

@dataclass
class Table:
    id: str
    header: List[str]
    rows: List[List[str]]


@dataclass
class Figure:
    id: str
    filename: str
    caption: str
    png: bytes


Block = Tuple[str, Any]  # ("h1" | "h2" | "p", text), ("table", Table), ("figure", Figure), ("list", [text])


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    out: List[str] = []
    for kind, item in blocks:
        if kind == "h1":
            out.append(f"# {item}\n")
        elif kind == "h2":
            out.append(f"## {item}\n")
        elif kind == "p":
            out.append(f"{item}\n")
        elif kind == "list":
            out.append("".join(f"- {line}\n" for line in item))
        elif kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in item.header) + " |\n"
                       + "|" + "---|" * len(item.header) + "\n"
                       + "".join("| " + " | ".join(_md_cell(c) for c in row) + " |\n" for row in item.rows))
        elif kind == "figure":
            out.append(f"![{item.caption}]({item.filename})\n\n*{item.caption}*\n")
    return "\n".join(out)


_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text, quote=False))


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1250px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1em 0 1.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 14px; color: #555; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>"]
    for kind, item in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{_inline_html(item)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(item)}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(line)}</li>" for line in item) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in item.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                           for row in item.rows)
            out.append(f'<table id="{item.id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        elif kind == "figure":
            data = base64.b64encode(item.png).decode("ascii")
            out.append(f'<figure id="{item.id}"><img src="data:image/png;base64,{data}" '
                       f'alt="{html.escape(item.caption)}" data-file="{html.escape(item.filename)}">'
                       f"<figcaption>{_inline_html(item.caption)}</figcaption></figure>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# --- plots ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def _colors(groups: Sequence[str]) -> Dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(groups)}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# --- the report ---------------------------------------------------------------------------------------

class Report:
    """All numbers of one report, computed from the runs; ``blocks()`` lays them out."""

    def __init__(self, runs: List[Run], options: ReportOptions):
        self.options = options
        self.runs = runs
        self.used = [r for r in runs if r.used]
        self.groups = _ordered_groups(self.used)
        self.envs = _ordered_envs(r.env for r in self.used)
        self.cells: Dict[Tuple[str, str], List[Run]] = {}
        for run in self.used:
            self.cells.setdefault((run.group, run.env), []).append(run)
        for cell in self.cells.values():
            cell.sort(key=lambda r: (r.seed, str(r.path)))
        self.references = {env: (ref.random, ref.reference) for env, ref in REFERENCES.items()}
        self.references.update(options.references)
        all_groups = {r.group for r in runs}
        if options.candidates is not None:
            for name in options.candidates:
                if name not in all_groups:
                    raise ReportError(f"--candidate {name!r}: no such group; the groups: "
                                      f"{', '.join(sorted(all_groups)) or 'none'}")
            self.candidates = [g for g in self.groups if g in options.candidates]
        else:
            mbpo_groups = {r.group for r in self.used if r.algo == "mbpo"}
            self.candidates = [g for g in self.groups if g in mbpo_groups]
        for env in options.thresholds:
            if env not in {r.env for r in runs}:
                raise ReportError(f"--threshold {env}=...: no run on {env}; the envs: "
                                  f"{', '.join(_ordered_envs(r.env for r in runs)) or 'none'}")
        self.notes: List[str] = []
        self.figures: List[Figure] = []
        self.aggregates: Dict[Tuple[str, str], Tuple[float, float, float]] = {}
        self.profile_envs: List[str] = []
        self.improvement_lines: List[str] = []

    # helpers
    def rng(self) -> np.random.Generator:
        """A fresh generator per interval, so no interval depends on what else is computed."""
        return np.random.default_rng(self.options.seed)

    def finals(self, group: str, env: str) -> np.ndarray:
        return np.array([r.final for r in self.cells.get((group, env), [])])

    def normalise(self, env: str, values: np.ndarray) -> np.ndarray:
        random, reference = self.references[env]
        return (values - random) / (reference - random)

    def budget(self, group: str, env: str) -> float:
        return max(float(r.x[-1]) for r in self.cells[(group, env)])

    def aggregate_envs(self) -> List[str]:
        """Envs with a reference return on which every group has used runs."""
        return [env for env in self.envs if env in self.references
                and all((g, env) in self.cells for g in self.groups)]

    def level_pct(self) -> str:
        return f"{100 * self.options.level:g}%"

    # sections
    def check_mixes(self) -> None:
        for (group, env), cell in sorted(self.cells.items()):
            differing = []
            for key in cell[0].config:
                if key in NON_EXPERIMENT_FIELDS or re.fullmatch(r"ray\.\w+_(cpus|gpus)", key):
                    continue
                values = {json.dumps(r.config.get(key), sort_keys=True) for r in cell}
                if len(values) > 1:
                    differing.append(f"{key} ({', '.join(sorted(values))})")
            if differing:
                self.notes.append(f"{group} on {env}: its runs differ in {'; '.join(differing)}; they are "
                                  f"pooled as one group (split them with --group-by FIELD).")
            seeds = [r.seed for r in cell]
            repeated = sorted({s for s in seeds if seeds.count(s) > 1})
            if repeated:
                self.notes.append(f"{group} on {env}: seed(s) {', '.join(map(str, repeated))} appear in more than "
                                  f"one run directory; each directory counts as a run.")
        for (group, env), cell in sorted(self.cells.items()):
            if max(float(r.x[0]) for r in cell) > min(float(r.x[-1]) for r in cell):
                self.notes.append(f"{group} on {env}: its runs' evaluations cover no common range of "
                                  f"{self.options.x_axis}, so it has no mean curve or efficiency ratio.")
        few = sorted({len(cell) for cell in self.cells.values() if len(cell) < 5})
        if few:
            self.notes.append(f"Some group has only {few[0]} seed(s) on an env: a bootstrap interval from so few runs "
                              f"is too narrow (a resample of n runs takes few distinct values, and the percentile "
                              f"method under-covers for small n); read the intervals as rough.")
        for env in self.envs:
            budgets = {g: self.budget(g, env) for g in self.groups if (g, env) in self.cells}
            if len(set(budgets.values())) > 1:
                listed = ", ".join(f"{g} {fmt_steps(b)}" for g, b in budgets.items())
                self.notes.append(f"{env}: the groups ran different budgets ({listed} "
                                  f"{self.options.x_axis}); their final scores are at different budgets.")

    def curves_section(self) -> List[Block]:
        plt = _pyplot()
        colors = _colors(self.groups)
        blocks: List[Block] = [("h2", "Learning curves"), (
            "p", f"Mean `{RETURN_KEY}` over seeds against {AXIS_LABELS[self.options.x_axis]}, with a "
                 f"{self.level_pct()} bootstrap band of that mean (seeds resampled as whole curves; a single "
                 f"seed has no band). The dotted line is the uniform-random policy's return.")]
        for env in self.envs:
            fig, ax = plt.subplots(figsize=(8, 4.6))
            for group in self.groups:
                cell = self.cells.get((group, env))
                if not cell:
                    continue
                grid, values = stats.align_curves([(r.x, r.y) for r in cell])
                if not grid.size:  # no x that every run covers (see the notes)
                    continue
                mean, lo, hi = stats.mean_band(values, self.options.reps, self.rng(), self.options.level)
                ax.plot(grid, mean, color=colors[group], label=f"{group} ({len(cell)} seeds)")
                if len(cell) > 1:
                    ax.fill_between(grid, lo, hi, color=colors[group], alpha=0.2, linewidth=0)
            if env in self.references:
                ax.axhline(self.references[env][0], color="0.4", linestyle=":", linewidth=1,
                           label="uniform-random policy")
            ax.set_xlabel(f"{AXIS_LABELS[self.options.x_axis]}  [x axis: {self.options.x_axis}]")
            ax.set_ylabel("eval return (deterministic policy)")
            ax.set_title(f"{env}: mean over seeds, {self.level_pct()} bootstrap band")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=9)
            fig.tight_layout()
            blocks.append(self.figure(f"curve-{_safe_name(env)}", f"curve_{_safe_name(env)}.png",
                                      f"{env}: eval return against {self.options.x_axis}", _png(fig)))
        return blocks

    def figure(self, fid: str, filename: str, caption: str, png: bytes) -> Block:
        fig = Figure(fid, filename, caption, png)
        self.figures.append(fig)
        return ("figure", fig)

    def final_scores_section(self) -> List[Block]:
        w = self.options.final_window
        rows = []
        for env in self.envs:
            for group in self.groups:
                cell = self.cells.get((group, env))
                if not cell:
                    continue
                finals = self.finals(group, env)
                point, lo, hi = stats.bootstrap_interval(stats.aggregate_mean, [finals], self.options.reps,
                                                         self.rng(), self.options.level)
                if env in self.references:
                    n_point, n_lo, n_hi = (float(self.normalise(env, np.array(v))) for v in (point, lo, hi))
                    normalised = fmt_interval(n_point, n_lo, n_hi)
                else:
                    normalised = "no reference"
                rows.append([env, group, str(len(cell)), fmt_steps(self.budget(group, env)),
                             fmt_interval(float(point), float(lo), float(hi), fmt_return), normalised,
                             "; ".join(f"{r.seed}: {fmt_return(r.final)}" for r in cell)])
        return [("h2", "Final scores per env"), (
            "p", f"A run's final score is the mean `{RETURN_KEY}` of its last {w} records (its last {w} "
                 f"evaluations, at the end of its budget). Per env and group: the mean over seeds with a "
                 f"{self.level_pct()} bootstrap interval (seeds resampled), the same normalised "
                 f"(0 = uniform-random policy, 1 = the reference return; table at the end), and each seed's "
                 f"final score."),
            ("table", Table("final-scores", ["env", "group", "seeds", f"budget ({self.options.x_axis})",
                                             "final score", "normalised", "per seed"], rows))]

    def aggregate_section(self) -> List[Block]:
        envs = self.aggregate_envs()
        blocks: List[Block] = [("h2", "Aggregates across envs (normalised final scores)")]
        left_out = [e for e in self.envs if e not in envs]
        if left_out:
            why = {e: ("no reference return" if e not in self.references else "not every group has runs there")
                   for e in left_out}
            self.notes.append("Left out of the aggregates and performance profiles: "
                              + "; ".join(f"{e} ({w})" for e, w in why.items()) + ".")
        if not envs:
            blocks.append(("p", "No env has a reference return and used runs of every group: no aggregates."))
            return blocks
        self.profile_envs = envs
        rows, estimates = [], {}
        for group in self.groups:
            tasks = [self.normalise(env, self.finals(group, env)) for env in envs]
            row = [group, str(sum(len(t) for t in tasks))]
            for name, fn in stats.AGGREGATES:
                point, lo, hi = stats.bootstrap_interval(fn, tasks, self.options.reps, self.rng(), self.options.level)
                estimates[(group, name)] = (float(point), float(lo), float(hi))
                row.append(fmt_interval(float(point), float(lo), float(hi)))
            rows.append(row)
        self.aggregates = estimates
        blocks += [("p", f"Over {len(envs)} env(s): {', '.join(envs)}. Each run's final score is normalised "
                         f"per env; IQM = mean of the middle 50% of all runs pooled (25% cut from each end, "
                         f"rounded down); median and mean are over the per-env means; optimality gap = "
                         f"1 - mean of min(score, 1). Each env weighs the same in every aggregate: where envs "
                         f"have different numbers of runs, a run weighs 1 / (envs x its env's runs), the IQM "
                         f"cuts a quarter of that weight from each end and the optimality gap averages the "
                         f"per-env means. Intervals: {self.level_pct()} stratified bootstrap "
                         f"(each env's runs resampled with replacement, {self.options.reps:,} replicates, "
                         f"percentile method). Higher is better except for the optimality gap."),
                   ("table", Table("aggregates", ["group", "runs"] + [n for n, _ in stats.AGGREGATES], rows))]
        plt = _pyplot()
        colors = _colors(self.groups)
        fig, axes = plt.subplots(1, len(stats.AGGREGATES), figsize=(12.5, 0.6 * len(self.groups) + 1.6),
                                 sharey=True)
        for ax, (name, _) in zip(axes, stats.AGGREGATES):
            for i, group in enumerate(self.groups):
                point, lo, hi = estimates[(group, name)]
                ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[group], alpha=0.75)
                ax.plot([point, point], [i - 0.3, i + 0.3], color="k", linewidth=2)
            ax.set_title(name)
            ax.set_xlabel("normalised score")
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(self.groups)))
        axes[0].set_yticklabels(self.groups)
        axes[0].invert_yaxis()
        fig.tight_layout()
        blocks.append(self.figure("aggregates", "aggregates.png",
                                  f"Aggregates of normalised final scores with {self.level_pct()} stratified "
                                  f"bootstrap intervals (bar) and point estimates (black)", _png(fig)))
        return blocks

    def profile_section(self) -> List[Block]:
        envs = self.profile_envs
        blocks: List[Block] = [("h2", "Performance profiles")]
        if not envs:
            blocks.append(("p", "None: no env has a reference return and used runs of every group."))
            return blocks
        tasks = {g: [self.normalise(env, self.finals(g, env)) for env in envs] for g in self.groups}
        every = np.concatenate([np.concatenate(t) for t in tasks.values()])
        lo_tau, hi_tau = min(0.0, float(every.min())), max(1.0, float(every.max()))
        pad = 0.02 * (hi_tau - lo_tau)
        taus = np.linspace(lo_tau - pad, hi_tau + pad, 201)
        plt = _pyplot()
        colors = _colors(self.groups)
        fig, ax = plt.subplots(figsize=(8, 4.6))
        for group in self.groups:
            profile = stats.score_distribution(tasks[group], taus)
            rng, reps, chunks = self.rng(), self.options.reps, []
            for start in range(0, reps, PROFILE_CHUNK):
                chunks.append(stats.score_distribution(
                    stats.resample(tasks[group], min(PROFILE_CHUNK, reps - start), rng), taus))
            lo, hi = stats.percentile_interval(np.concatenate(chunks, axis=0), self.options.level)
            ax.step(taus, profile, where="post", color=colors[group], label=group)
            ax.fill_between(taus, lo, hi, step="post", color=colors[group], alpha=0.2, linewidth=0)
        ax.set_xlabel("normalised final score tau (0 = random policy, 1 = reference return)")
        ax.set_ylabel("fraction of runs with score > tau")
        ax.set_title(f"Performance profiles over {len(envs)} env(s), {self.level_pct()} stratified bootstrap bands")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        fig.tight_layout()
        blocks += [("p", "For each normalised score tau: the fraction of runs whose final score is above tau "
                         "(per env, then averaged over envs), as in Agarwal et al. 2021. A curve that lies above "
                         "another everywhere is better at every level."),
                   self.figure("profiles", "profiles.png", "Performance profiles of normalised final scores",
                               _png(fig))]
        return blocks

    def comparisons(self) -> List[Tuple[str, str]]:
        return [(c, g) for c in self.candidates for g in self.groups if g != c]

    def improvement_section(self) -> List[Block]:
        blocks: List[Block] = [("h2", "Probability of improvement")]
        pairs = self.comparisons()
        if not pairs:
            blocks.append(("p", "None: no candidate group (the mbpo groups, or --candidate) and another group "
                                "with used runs."))
            return blocks
        rows, estimates = [], []
        for cand, other in pairs:
            envs = [e for e in self.envs if (cand, e) in self.cells and (other, e) in self.cells]
            if not envs:
                rows.append([cand, other, "none", "no shared env"])
                continue
            point, lo, hi = stats.bootstrap_improvement([self.finals(cand, e) for e in envs],
                                                        [self.finals(other, e) for e in envs],
                                                        self.options.reps, self.rng(), self.options.level)
            per_env = "; ".join(
                f"{e}: {fmt2(float(stats.task_improvement(self.finals(cand, e), self.finals(other, e))))}"
                for e in envs)
            rows.append([cand, other, str(len(envs)), fmt_interval(point, lo, hi), per_env])
            estimates.append((f"P({cand} > {other})", point, lo, hi))
            self.improvement_lines.append(f"P({cand} > {other}) = {fmt_interval(point, lo, hi)}")
        for row in rows:
            if len(row) == 4:
                row.append("")
        blocks += [("p", f"P(X > Y): the probability that a run of X on an env scores above a run of Y on the "
                         f"same env (ties count one half), averaged over the envs both have; per env it is the "
                         f"Mann-Whitney U statistic / (n_X n_Y). Interval: {self.level_pct()} bootstrap with X's "
                         f"and Y's runs resampled independently within each env. 0.5 = no difference; an interval "
                         f"wholly above 0.5 says X is better; Agarwal et al. read an upper bound below 0.75 as no "
                         f"meaningful improvement."),
                   ("table", Table("improvement", ["X", "Y", "envs", "P(X > Y)", "per env"], rows))]
        if estimates:
            plt = _pyplot()
            fig, ax = plt.subplots(figsize=(8, 0.5 * len(estimates) + 1.4))
            for i, (label, point, lo, hi) in enumerate(estimates):
                ax.barh(i, max(hi - lo, 0.004), left=lo, height=0.6, color="tab:blue", alpha=0.6)
                ax.plot([point, point], [i - 0.3, i + 0.3], color="k", linewidth=2)
            ax.axvline(0.5, color="0.4", linestyle="--", linewidth=1)
            ax.set_yticks(range(len(estimates)))
            ax.set_yticklabels([e[0] for e in estimates])
            ax.invert_yaxis()
            ax.set_xlim(-0.02, 1.02)
            ax.set_xlabel("probability of improvement")
            ax.grid(axis="x", alpha=0.3)
            fig.tight_layout()
            blocks.append(self.figure("improvement", "improvement.png",
                                      f"Probability of improvement with {self.level_pct()} bootstrap intervals",
                                      _png(fig)))
        return blocks

    def thresholds_section(self) -> List[Block]:
        rows = []
        for env in self.envs:
            levels: List[Tuple[float, str]] = []
            if env in self.references:
                random, reference = self.references[env]
                levels += [(random + q * (reference - random), fmt2(q)) for q in self.options.threshold_levels]
            levels += [(t, fmt2(float(self.normalise(env, np.array(t)))) if env in self.references else "")
                       for t in self.options.thresholds.get(env, [])]
            for threshold, normalised in levels:
                row = [env, fmt_return(threshold), normalised]
                for group in self.groups:
                    cell = self.cells.get((group, env))
                    if not cell:
                        row.append("")
                        continue
                    steps = [float(stats.first_reach(r.x, r.y, threshold)) for r in cell]
                    reached = sum(math.isfinite(s) for s in steps)
                    row.append(f"{fmt_steps(stats.median_steps(steps))} ({reached}/{len(cell)})")
                rows.append(row)
        blocks: List[Block] = [("h2", "Steps to threshold"), (
            "p", f"For each run, the first {self.options.x_axis} at which `{RETURN_KEY}` (one evaluation, no "
                 f"smoothing) is at least the threshold; per group the median over seeds, a seed that never "
                 f"reaches it counting as infinitely many steps, and in brackets the seeds that reach it / the "
                 f"seeds. Thresholds: normalised scores {', '.join(fmt2(q) for q in self.options.threshold_levels)} "
                 f"(as returns per env), plus any --threshold.")]
        if rows:
            blocks.append(("table", Table("thresholds", ["env", "threshold (return)", "normalised"] + self.groups,
                                          rows)))
        else:
            blocks.append(("p", "No thresholds: no env has a reference return or a --threshold."))
        return blocks

    def efficiency_section(self) -> List[Block]:
        rows = []
        for env in self.envs:
            for cand, other in self.comparisons():
                if (cand, env) not in self.cells or (other, env) not in self.cells:
                    continue
                grid, values = stats.align_curves([(r.x, r.y) for r in self.cells[(cand, env)]])
                finals = self.finals(other, env)
                base_steps = self.budget(other, env)
                if base_steps <= 0 or not grid.size:
                    continue
                point, lo, hi = stats.bootstrap_efficiency_ratio(grid, values, finals, base_steps,
                                                                 self.options.reps, self.rng(), self.options.level)
                cand_steps = point * base_steps
                if math.isfinite(point) and cand_steps <= grid[0]:
                    # already at the target at its first evaluation: the curve's resolution bounds the ratio
                    ratio = f"<= {fmt_ratio(point)} [{fmt_ratio(lo)}, {fmt_ratio(hi)}]"
                    fewer = f">= {1 / point:.1f}x (at the candidate's first evaluation)" if point > 0 else ""
                elif math.isfinite(point):
                    ratio = fmt_interval(point, lo, hi, fmt_ratio)
                    fewer = f"{1 / point:.1f}x" if point > 0 else ""
                else:
                    ratio = (f"not reached by its {fmt_steps(grid[-1])} steps (> {fmt_ratio(grid[-1] / base_steps)}) "
                             f"[{fmt_ratio(lo)}, {fmt_ratio(hi)}]")
                    fewer = ""
                rows.append([env, cand, other, fmt_return(float(finals.mean())), fmt_steps(base_steps),
                             fmt_steps(cand_steps), ratio, fewer])
        blocks: List[Block] = [("h2", "Sample efficiency"), (
            "p", f"For each baseline Y: its final score (mean over seeds) and its budget in {self.options.x_axis}; "
                 f"the first {self.options.x_axis} at which the candidate's mean curve over seeds reaches that "
                 f"score; their ratio (candidate steps / Y's steps: 0.1 means the candidate needs a tenth of "
                 f"Y's steps) with a {self.level_pct()} bootstrap interval (both algorithms' seeds resampled; "
                 f"'not reached' where a replicate's curve never gets there), and its inverse, how many times "
                 f"fewer steps the candidate needs. The candidate's curve is evaluated once per epoch, so its "
                 f"steps are a multiple of the epoch length; where it is at Y's final score already at its first "
                 f"evaluation, the ratio is only bounded (<=).")]
        if rows:
            blocks.append(("table", Table("efficiency", ["env", "candidate", "baseline Y", "Y's final score",
                                                         "Y's steps", "candidate's steps", "ratio", "fewer steps"],
                                          rows)))
        else:
            blocks.append(("p", "None: no candidate group shares an env with another group."))
        return blocks

    def runs_section(self) -> List[Block]:
        rows = []
        for env in _ordered_envs(r.env for r in self.runs):
            for group in _ordered_groups([r for r in self.runs if r.env == env]):
                found = [r for r in self.runs if r.env == env and r.group == group]
                used = [r for r in found if r.used]
                rows.append([env, group, str(len(found)), str(len(used)),
                             ", ".join(str(r.seed) for r in sorted(used, key=lambda r: r.seed)) or "none",
                             "; ".join(f"{t:,}" for t in sorted({r.total_steps for r in found}))])
        incomplete = [r for r in self.runs if not r.used or not r.has_checkpoint]
        blocks: List[Block] = [("h2", "Runs"), (
            "p", f"{len(self.runs)} run directories found under {', '.join(str(d) for d in self.options.dirs)}; "
                 f"{len(self.used)} used. A run is used when its records reach its config's total_steps."),
            ("table", Table("runs", ["env", "group", "runs found", "used", "seeds used", "total_steps"], rows)),
            ("h2", "Incomplete runs")]
        if incomplete:
            blocks.append(("p", "Runs that stopped before their total_steps, or have no checkpoint.pt. A run whose "
                                "records reach total_steps is used even without a checkpoint (it cannot be "
                                "resumed, but its metrics are complete); a run that stopped early is left out of "
                                "every statistic and plot."))
            rows = [[_display_path(r.path), r.group, r.env, str(r.seed), f"{r.steps_done:,} / {r.total_steps:,}",
                     "yes" if r.has_checkpoint else "no",
                     r.problem or "no checkpoint.pt", "yes" if r.used else "no"]
                    for r in sorted(incomplete, key=lambda r: str(r.path))]
            blocks.append(("table", Table("incomplete", ["run directory", "group", "env", "seed", "env steps",
                                                         "checkpoint", "reason", "used"], rows)))
        else:
            blocks.append(("p", "None: every run reached its total_steps and has a checkpoint."))
        return blocks

    def references_section(self) -> List[Block]:
        rows = []
        for env in self.envs:
            if env in self.options.references:
                random, reference = self.options.references[env]
                rows.append([env, fmt_return(random), fmt_return(reference), "--reference"])
            elif env in REFERENCES:
                ref = REFERENCES[env]
                rows.append([env, fmt_return(ref.random), fmt_return(ref.reference),
                             f"random: measured here, 100 episodes; reference: {ref.source}"])
            else:
                rows.append([env, "", "", "none: not normalised (give --reference ENV=RANDOM,REFERENCE)"])
        return [("h2", "Reference returns"), (
            "p", "Normalised score = (return - random) / (reference - random). Sources: "
                 "docs/published_results.md (normalised scores)."),
            ("table", Table("references", ["env", "random (0)", "reference (1)", "source"], rows))]

    def headline(self) -> List[str]:
        lines = [f"{len(self.runs)} runs found, {len(self.used)} used, {len(self.groups)} group(s) on "
                 f"{len(self.envs)} env(s) ({', '.join(self.envs) or 'none'}); x axis: {self.options.x_axis}; "
                 f"final score = mean `{RETURN_KEY}` of a run's last {self.options.final_window} records."]
        if self.aggregates:
            lines.append("IQM of normalised final scores [" + self.level_pct() + " CI]: " + "; ".join(
                f"{g} {fmt_interval(*self.aggregates[(g, 'IQM')])}" for g in self.groups) + ".")
        if self.improvement_lines:
            lines.append("; ".join(self.improvement_lines) + ".")
        not_used = len(self.runs) - len(self.used)
        if not_used:
            lines.append(f"{not_used} run(s) stopped early and are left out (see Incomplete runs).")
        return lines

    def blocks(self) -> List[Block]:
        self.check_mixes()
        body: List[Block] = []
        if self.used:
            body += self.curves_section()
            body += self.final_scores_section()
            body += self.aggregate_section()
            body += self.profile_section()
            body += self.improvement_section()
            body += self.thresholds_section()
            body += self.efficiency_section()
        body += self.runs_section()
        if self.notes:
            body += [("h2", "Notes"), ("list", self.notes)]
        body += self.references_section()
        settings = (f"Settings: x axis `{self.options.x_axis}`; final window {self.options.final_window} records; "
                    f"{self.options.reps:,} bootstrap replicates, seed {self.options.seed}, {self.level_pct()} "
                    f"intervals; groups split by algo" + (" and " + ", ".join(self.options.group_by)
                                                          if self.options.group_by else "")
                    + ". What each number means: docs/report.md.")
        return [("h1", "mbpo-ray report"), ("p", " ".join(self.headline())), ("p", settings)] + body


# --- entry point --------------------------------------------------------------------------------------

def check_out(out: Path) -> None:
    """--out must be new, empty, or hold a previous report (which is replaced) and nothing else."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir()
                   if not (p.is_file() and (p.name in REPORT_FILES or p.suffix == ".png"))]
        if foreign:
            raise ReportError(f"--out {out} holds files that are not a report ({', '.join(sorted(foreign)[:3])}); "
                              f"choose a new or empty folder, or one with an earlier report")


def load_runs(options: ReportOptions) -> List[Run]:
    paths = find_run_dirs(options.dirs)
    if not paths:
        raise ReportError(f"no run directories (folders with config.yaml and metrics.jsonl) under "
                          f"{', '.join(str(d) for d in options.dirs)}")
    out = options.out.resolve()
    runs = [load_run(p) for p in paths if out not in (p, *p.parents)]
    for run in runs:
        run.group = group_label(run, options.group_by)
        prepare_run(run, options)
    return runs


def write_files(out: Path, files: Dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder beside ``out``, then put it in out's place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def make_report(options: ReportOptions) -> Path:
    """Read the runs, compute and write the report; returns the report folder."""
    check_out(options.out)
    runs = load_runs(options)
    report = Report(runs, options)
    blocks = report.blocks()
    files = {f.filename: f.png for f in report.figures}
    files["report.md"] = render_markdown(blocks).encode()
    files["report.html"] = render_html(blocks, "mbpo-ray report").encode()
    write_files(options.out, files)
    return options.out


def run_report(args) -> int:
    """The `report` subcommand (mbpo_ray/cli.py)."""
    from mbpo_ray.analysis.options import parse_options

    options = parse_options(args)
    out = make_report(options)
    pngs = sorted(p.name for p in out.glob("*.png"))
    print(f"mbpo-ray report: wrote {out / 'report.md'}, {out / 'report.html'} and {len(pngs)} figure(s)")
    return 0
