"""The report's sections (docs/report.md): each computes its numbers from the runs with
``mbpo_ray.analysis.stats`` and lays them out as blocks of the document."""
from __future__ import annotations

import json
import math
import re
from typing import Dict, List, Tuple

import numpy as np

from mbpo_ray.analysis import stats
from mbpo_ray.analysis.report.options import ReportError, ReportOptions
from mbpo_ray.analysis.references import REFERENCES
from mbpo_ray.analysis.report.document import (Block, Figure, Table, display_path, fmt2, fmt_interval,
                                               fmt_ratio, fmt_return, fmt_steps, group_colors, ordered_envs, ordered_groups,
                                               png_bytes, pyplot, safe_name)
from mbpo_ray.analysis.report.runs import AXIS_LABELS, NON_EXPERIMENT_FIELDS, PROFILE_CHUNK, RETURN_KEY, Run


# --- the report ---------------------------------------------------------------------------------------

class Report:
    """All numbers of one report, computed from the runs; ``blocks()`` lays them out."""

    def __init__(self, runs: List[Run], options: ReportOptions):
        self.options = options
        self.runs = runs
        self.used = [r for r in runs if r.used]
        self.groups = ordered_groups(self.used)
        self.envs = ordered_envs(r.env for r in self.used)
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
                                  f"{', '.join(ordered_envs(r.env for r in runs)) or 'none'}")
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
        plt = pyplot()
        colors = group_colors(self.groups)
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
            blocks.append(self.figure(f"curve-{safe_name(env)}", f"curve_{safe_name(env)}.png",
                                      f"{env}: eval return against {self.options.x_axis}", png_bytes(fig)))
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
        plt = pyplot()
        colors = group_colors(self.groups)
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
                                  f"bootstrap intervals (bar) and point estimates (black)", png_bytes(fig)))
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
        plt = pyplot()
        colors = group_colors(self.groups)
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
                               png_bytes(fig))]
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
            plt = pyplot()
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
                                      png_bytes(fig)))
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
        for env in ordered_envs(r.env for r in self.runs):
            for group in ordered_groups([r for r in self.runs if r.env == env]):
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
            rows = [[display_path(r.path), r.group, r.env, str(r.seed), f"{r.steps_done:,} / {r.total_steps:,}",
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
