"""The report's statistics, in plain numpy (docs/report.md says what each one means).

Aggregates across envs follow Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of
the Statistical Precipice" (NeurIPS): interquartile mean, stratified bootstrap confidence
intervals, probability of improvement and performance profiles (run-score distributions).

Scores of one algorithm arrive as a list with one array per task (env): ``tasks[m]`` holds the
scores of that env's runs (seeds), and envs may have different numbers of runs. Every aggregate
takes arrays whose last axis is the runs axis and may carry leading axes, so that one call
evaluates all bootstrap replicates at once: a task of shape ``(n,)`` gives a number, a task of
shape ``(reps, n)`` gives ``reps`` numbers.

The bootstrap draws, in this order, for each task m in the order given, one
``rng.integers(0, n_m, size=(reps, n_m))`` array of run indices (each replicate resamples each
env's runs with replacement, keeping each env's run count: the strata are the envs). Comparisons of
two algorithms resample them independently: all of the first algorithm's tasks, then all of the
second's. tests/test_report.py repeats these draws by hand.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np

Tasks = Sequence[np.ndarray]


def _as_tasks(tasks: Tasks) -> List[np.ndarray]:
    out = [np.asarray(t, dtype=float) for t in tasks]
    if not out:
        raise ValueError("no tasks: an aggregate needs at least one env with runs")
    if any(t.shape[-1] == 0 for t in out):
        raise ValueError("a task without runs: every env needs at least one run")
    return out


def _pooled(tasks: Tasks) -> np.ndarray:
    """All runs of all tasks side by side on the last axis."""
    return np.concatenate(_as_tasks(tasks), axis=-1)


# --- aggregates of one algorithm ------------------------------------------------------------------

def trimmed_mean(values: np.ndarray, proportion: float = 0.25) -> np.ndarray:
    """Mean of the sorted values left after cutting ``floor(proportion * n)`` from each end (over
    the last axis). With proportion 0.25 this is the interquartile mean; the cut is the one of
    ``scipy.stats.trim_mean``, which Agarwal et al.'s code uses, so for n not divisible by 4 fewer
    than half of the values are cut (n = 6: one from each end)."""
    values = np.sort(np.asarray(values, dtype=float), axis=-1)
    n = values.shape[-1]
    cut = int(proportion * n)
    return values[..., cut:n - cut].mean(axis=-1)


def _equal_counts(tasks: List[np.ndarray]) -> bool:
    return len({t.shape[-1] for t in tasks}) == 1


def _run_weights(tasks: List[np.ndarray]) -> np.ndarray:
    """Each run's weight when every task weighs the same: 1 / (tasks x its task's runs)."""
    return np.concatenate([np.full(t.shape[-1], 1.0 / (len(tasks) * t.shape[-1])) for t in tasks])


def weighted_trimmed_mean(values: np.ndarray, weights: np.ndarray, proportion: float = 0.25) -> np.ndarray:
    """Mean of the values (last axis) whose weights lie in the middle of the weight mass once the
    lowest and the highest ``proportion`` of it are cut; a value at a cut counts with the part of
    its weight inside (``weights`` sum to 1)."""
    order = np.argsort(values, axis=-1, kind="stable")
    sorted_values = np.take_along_axis(np.asarray(values, dtype=float), order, axis=-1)
    w = np.asarray(weights, dtype=float)[order]
    upper = np.cumsum(w, axis=-1)
    lower = upper - w
    kept = np.clip(np.minimum(upper, 1.0 - proportion) - np.maximum(lower, proportion), 0.0, None)
    return (kept * sorted_values).sum(axis=-1) / (1.0 - 2.0 * proportion)


def aggregate_iqm(tasks: Tasks) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled, each task weighing the same. With equal
    run counts per task: the trimmed mean of the pooled runs (``trimmed_mean``, each run one
    value). With unequal counts, pooling would let the task with the most runs weigh most: each
    run weighs 1 / (tasks x its task's runs) and the lowest and highest quarter of that weight
    are cut (``weighted_trimmed_mean``)."""
    tasks = _as_tasks(tasks)
    if _equal_counts(tasks):
        return trimmed_mean(_pooled(tasks), 0.25)
    return weighted_trimmed_mean(_pooled(tasks), _run_weights(tasks), 0.25)


def aggregate_mean(tasks: Tasks) -> np.ndarray:
    """Mean over tasks of each task's mean over its runs."""
    return np.mean(np.stack([t.mean(axis=-1) for t in _as_tasks(tasks)], axis=-1), axis=-1)


def aggregate_median(tasks: Tasks) -> np.ndarray:
    """Median over tasks of each task's mean over its runs."""
    return np.median(np.stack([t.mean(axis=-1) for t in _as_tasks(tasks)], axis=-1), axis=-1)


def optimality_gap(tasks: Tasks, gamma: float = 1.0) -> np.ndarray:
    """How far the runs fall short of ``gamma``: gamma minus the mean of min(score, gamma) over all
    runs (scores above gamma count as gamma), each task weighing the same: the mean over tasks of
    each task's mean, which is the pooled mean when the run counts are equal."""
    return gamma - np.mean(np.stack([np.minimum(t, gamma).mean(axis=-1) for t in _as_tasks(tasks)], axis=-1),
                           axis=-1)


AGGREGATES: Tuple[Tuple[str, Callable[[Tasks], np.ndarray]], ...] = (
    ("IQM", aggregate_iqm),
    ("median", aggregate_median),
    ("mean", aggregate_mean),
    ("optimality gap", optimality_gap),
)


# --- comparisons ------------------------------------------------------------------------------------

def task_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) on one task: over every pair (a run of X, a run of Y), 1 when X's score is larger,
    1/2 when they are equal, 0 otherwise, averaged over the pairs. This is the Mann-Whitney U
    statistic of X divided by n_x * n_y."""
    x = np.asarray(x, dtype=float)[..., :, None]
    y = np.asarray(y, dtype=float)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1))


def probability_of_improvement(x_tasks: Tasks, y_tasks: Tasks) -> np.ndarray:
    """P(X > Y): the mean over tasks of ``task_improvement`` on that task (the tasks of x_tasks and
    y_tasks correspond one to one)."""
    x_tasks, y_tasks = _as_tasks(x_tasks), _as_tasks(y_tasks)
    if len(x_tasks) != len(y_tasks):
        raise ValueError("probability of improvement needs the same tasks for both algorithms")
    return np.mean(np.stack([task_improvement(x, y) for x, y in zip(x_tasks, y_tasks)], axis=-1),
                   axis=-1)


def score_distribution(tasks: Tasks, taus: np.ndarray) -> np.ndarray:
    """Performance profile: for each threshold tau, the fraction of runs whose score is strictly
    above tau, computed per task and averaged over tasks (the run-score distribution; with equal
    run counts per task it is the fraction of all runs). Shape: leading axes + (len(taus),)."""
    taus = np.asarray(taus, dtype=float)
    per_task = [(np.asarray(t)[..., :, None] > taus).mean(axis=-2) for t in _as_tasks(tasks)]
    return np.mean(np.stack(per_task, axis=0), axis=0)


# --- the stratified bootstrap -----------------------------------------------------------------------

def resample(tasks: Tasks, reps: int, rng: np.random.Generator) -> List[np.ndarray]:
    """One stratified bootstrap resample of every task per replicate: shape (reps, n_m) each."""
    out = []
    for task in _as_tasks(tasks):
        n = task.shape[-1]
        out.append(task[rng.integers(0, n, size=(reps, n))])
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> Tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval: the (1 - level)/2 and (1 + level)/2 quantiles of the
    replicates along axis 0, linearly interpolated (numpy's default)."""
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def bootstrap_interval(statistic: Callable[[Tasks], np.ndarray], tasks: Tasks, reps: int,
                       rng: np.random.Generator, level: float = 0.95) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and stratified-bootstrap percentile interval of ``statistic``."""
    point = statistic(_as_tasks(tasks))
    lo, hi = percentile_interval(statistic(resample(tasks, reps, rng)), level)
    return point, lo, hi


def bootstrap_improvement(x_tasks: Tasks, y_tasks: Tasks, reps: int, rng: np.random.Generator,
                          level: float = 0.95) -> Tuple[float, float, float]:
    """P(X > Y) with X and Y resampled independently, each stratified by task."""
    point = float(probability_of_improvement(x_tasks, y_tasks))
    xs = resample(x_tasks, reps, rng)
    ys = resample(y_tasks, reps, rng)
    lo, hi = percentile_interval(probability_of_improvement(xs, ys), level)
    return point, float(lo), float(hi)


# --- learning curves --------------------------------------------------------------------------------

def align_curves(curves: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Put runs on one x grid: the union of their x values inside the range that every run covers,
    each run linearly interpolated between its own points (runs that share their x values are
    used as they are). Returns the grid and an array (runs, grid points)."""
    if not curves:
        raise ValueError("no curves to align")
    start = max(float(x[0]) for x, _ in curves)
    end = min(float(x[-1]) for x, _ in curves)
    grid = np.unique(np.concatenate([np.asarray(x, dtype=float) for x, _ in curves]))
    grid = grid[(grid >= start) & (grid <= end)]
    values = np.stack([np.interp(grid, np.asarray(x, dtype=float), np.asarray(y, dtype=float))
                       for x, y in curves])
    return grid, values


def mean_band(values: np.ndarray, reps: int, rng: np.random.Generator,
              level: float = 0.95) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0 of values: runs x grid points) and its bootstrap percentile band:
    each replicate resamples the runs with replacement (whole curves, so that a run's points stay
    together) and takes their mean curve."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    idx = rng.integers(0, n, size=(reps, n))
    means = values[idx].mean(axis=1)  # reps x grid points
    lo, hi = percentile_interval(means, level)
    return values.mean(axis=0), lo, hi


def first_reach(x: np.ndarray, y: np.ndarray, threshold) -> np.ndarray:
    """The first x at which y >= threshold; inf where y never reaches it. ``y`` may carry leading
    axes (replicates); ``threshold`` is a number or one per replicate."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    threshold = np.asarray(threshold, dtype=float)[..., None]
    reached = y >= threshold
    first = np.argmax(reached, axis=-1)
    return np.where(reached.any(axis=-1), x[first], np.inf)


def median_steps(steps: Sequence[float]) -> float:
    """Median over runs of their steps to a threshold, runs that never reach it counting as
    infinitely many steps (so the median is finite only when at least half of them reach it)."""
    values = np.sort(np.asarray(steps, dtype=float))
    n = len(values)
    if n % 2:
        return float(values[n // 2])
    a, b = values[n // 2 - 1], values[n // 2]
    return float(b) if np.isinf(b) else float((a + b) / 2)


def efficiency_ratio(grid: np.ndarray, candidate: np.ndarray, baseline_finals: np.ndarray,
                     baseline_steps: float) -> float:
    """Steps the candidate's mean curve (candidate: runs x grid points) needs to reach the mean of
    the baseline's final scores, divided by the baseline's steps; inf when it never does."""
    target = np.mean(np.asarray(baseline_finals, dtype=float))
    return float(first_reach(grid, np.asarray(candidate, dtype=float).mean(axis=0), target) / baseline_steps)


def bootstrap_efficiency_ratio(grid: np.ndarray, candidate: np.ndarray, baseline_finals: np.ndarray,
                               baseline_steps: float, reps: int, rng: np.random.Generator,
                               level: float = 0.95) -> Tuple[float, float, float]:
    """``efficiency_ratio`` with an interval: each replicate resamples the candidate's runs and the
    baseline's runs independently (candidate first). Replicates in which the candidate never
    reaches the target count as inf, so the interval's quantiles are taken without interpolation
    (numpy's "inverted_cdf": each bound is one of the replicates' values)."""
    candidate = np.asarray(candidate, dtype=float)
    finals = np.asarray(baseline_finals, dtype=float)
    point = efficiency_ratio(grid, candidate, finals, baseline_steps)
    n, k = candidate.shape[0], finals.shape[0]
    curves = candidate[rng.integers(0, n, size=(reps, n))].mean(axis=1)
    targets = finals[rng.integers(0, k, size=(reps, k))].mean(axis=1)
    ratios = first_reach(grid, curves, targets) / baseline_steps
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return point, float(lo), float(hi)
