"""`mbpo-ray report` (docs/report.md): its statistics against hand-computed values on fixed inputs,
and the report itself on small synthetic run directories (no training)."""
from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mbpo_ray.analysis import stats
from mbpo_ray.analysis.report.options import ReportOptions
from mbpo_ray.analysis.report.runs import load_run, prepare_run
from mbpo_ray.cli import main
from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- statistics on fixed inputs ---------------------------------------------------------------------

def test_interquartile_mean_cuts_a_quarter_from_each_end_rounded_down():
    assert stats.trimmed_mean(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # n = 6: one value cut from each end (floor(6 / 4) = 1): mean of 2, 3, 4, 10
    assert stats.trimmed_mean(np.array([10, 1, 3, 2, 100, 4])) == pytest.approx(4.75)
    # n = 3: nothing cut, the plain mean
    assert stats.trimmed_mean(np.array([1, 2, 9])) == pytest.approx(4.0)
    # pooled over tasks, and one value per row of a batch of replicates
    assert stats.aggregate_iqm([np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]) == pytest.approx(4.5)
    batch = stats.aggregate_iqm([np.array([[1, 2, 3, 4], [4, 4, 4, 40]]), np.array([[5, 6, 7, 8], [0, 0, 0, 0]])])
    assert batch == pytest.approx([4.5, 2.0])  # second row sorted: 0 0 0 0 4 4 4 40 -> mean of 0 0 4 4


def test_mean_median_and_optimality_gap():
    tasks = [np.array([0.0]), np.array([1.0, 3.0]), np.array([10.0])]  # per-task means 0, 2, 10
    assert stats.aggregate_mean(tasks) == pytest.approx(4.0)
    assert stats.aggregate_median(tasks) == pytest.approx(2.0)
    # min(score, 1) over all runs: 0.5, 1, 0, 1 -> mean 0.625
    assert stats.optimality_gap([np.array([0.5, 1.5]), np.array([0.0, 1.0])]) == pytest.approx(0.375)


def test_probability_of_improvement_counts_pairs_and_half_ties():
    # x = 1 beats one of (2, 2, 0); x = 2 ties twice and beats 0: 2; x = 3 beats all: 3 -> 6 / 9
    assert stats.task_improvement(np.array([1, 2, 3]), np.array([2, 2, 0])) == pytest.approx(2 / 3)
    assert stats.task_improvement(np.array([4, 4]), np.array([4, 4])) == pytest.approx(0.5)
    # averaged over tasks: (2/3 + 1/2) / 2
    p = stats.probability_of_improvement([np.array([1, 2, 3]), np.array([5.0])],
                                         [np.array([2, 2, 0]), np.array([5.0])])
    assert p == pytest.approx(7 / 12)
    assert stats.probability_of_improvement([np.array([0, 1])], [np.array([2, 3])]) == 0.0


def test_performance_profile_is_the_fraction_of_runs_strictly_above_tau_averaged_over_tasks():
    tasks = [np.array([0.2, 0.6]), np.array([0.1, 0.5, 0.9, 1.2])]
    # task 1: 1, 1/2, 0; task 2: 1, 2/4 (0.5 is not above 0.5), 1/4
    assert stats.score_distribution(tasks, np.array([0.0, 0.5, 1.0])) == pytest.approx([1.0, 0.5, 0.125])


def test_bootstrap_interval_of_two_runs_spans_them():
    # One env, runs 0 and 1: a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so
    # about 25 % of the replicates sit exactly at each end: the 2.5 % and 97.5 % quantiles are 0 and 1.
    point, lo, hi = stats.bootstrap_interval(stats.aggregate_mean, [np.array([0.0, 1.0])], 2000,
                                             np.random.default_rng(0))
    assert (point, lo, hi) == (0.5, 0.0, 1.0)
    # a single run per env leaves nothing to resample: the interval is the point
    point, lo, hi = stats.bootstrap_interval(stats.aggregate_iqm, [np.array([0.3]), np.array([0.7])], 500,
                                             np.random.default_rng(0))
    assert point == lo == hi == pytest.approx(0.5)


def _percentile_by_hand(values, q):
    """numpy's default (linear) percentile, written out: position (n - 1) q between sorted values."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    below = int(math.floor(pos))
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (pos - below) * (ordered[above] - ordered[below])


def test_stratified_bootstrap_bounds_match_the_documented_draws_by_hand():
    # equal run counts (the pooled IQM; unequal counts: test_aggregates_weigh_each_env_the_same...)
    tasks = [np.array([0.1, 0.9, 0.4]), np.array([0.0, 1.0, 0.6])]
    reps, seed = 5, 123
    # The draws stats.py documents: per task, in order, rng.integers(0, n, size=(reps, n)).
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, 3, size=(reps, 3)), rng.integers(0, 3, size=(reps, 3))]
    iqms = []
    for r in range(reps):
        pooled = sorted([float(tasks[0][i]) for i in draws[0][r]] + [float(tasks[1][i]) for i in draws[1][r]])
        middle = pooled[1:5]  # 6 values: floor(6 / 4) = 1 cut from each end
        iqms.append(sum(middle) / len(middle))
    point, lo, hi = stats.bootstrap_interval(stats.aggregate_iqm, tasks, reps, np.random.default_rng(seed))
    assert point == pytest.approx((0.1 + 0.4 + 0.6 + 0.9) / 4)  # pooled 0, .1, .4, .6, .9, 1 -> middle four
    assert lo == pytest.approx(_percentile_by_hand(iqms, 0.025))
    assert hi == pytest.approx(_percentile_by_hand(iqms, 0.975))


def test_improvement_bootstrap_resamples_each_algorithm_independently():
    x, y = [np.array([1.0, 3.0])], [np.array([2.0, 2.0, 0.0])]
    reps, seed = 4, 7
    rng = np.random.default_rng(seed)
    xi, yi = rng.integers(0, 2, size=(reps, 2)), rng.integers(0, 3, size=(reps, 3))  # x's tasks, then y's
    by_hand = []
    for r in range(reps):
        xs, ys = x[0][xi[r]], y[0][yi[r]]
        by_hand.append(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys) / 6)
    point, lo, hi = stats.bootstrap_improvement(x, y, reps, np.random.default_rng(seed))
    assert point == pytest.approx(4 / 6)  # 1 beats 0; 3 beats all three
    assert lo == pytest.approx(_percentile_by_hand(by_hand, 0.025))
    assert hi == pytest.approx(_percentile_by_hand(by_hand, 0.975))


def test_steps_to_threshold_and_its_median_over_seeds():
    x, y = np.array([100, 200, 300]), np.array([0.0, 5.0, 10.0])
    assert stats.first_reach(x, y, 5.0) == 200
    assert stats.first_reach(x, y, -1.0) == 100
    assert stats.first_reach(x, y, 11.0) == np.inf
    assert stats.first_reach(x, np.array([y, y + 6]), np.array([5.0, 5.0])).tolist() == [200, 100]
    assert stats.median_steps([100, np.inf, 300]) == 300
    assert stats.median_steps([100, 300, 500, np.inf]) == 400
    assert stats.median_steps([100, 200, np.inf, np.inf]) == np.inf  # half never get there


def test_sample_efficiency_ratio():
    grid = np.array([1000, 2000, 3000, 4000])
    candidate = np.array([[0, 10, 50, 100], [0, 30, 70, 100]])  # mean 0, 20, 60, 100
    # the baseline's final score: mean of 50 and 70 = 60, first reached at 3000 of the baseline's 10,000
    assert stats.efficiency_ratio(grid, candidate, np.array([50.0, 70.0]), 10_000) == pytest.approx(0.3)
    assert stats.efficiency_ratio(grid, candidate, np.array([150.0]), 10_000) == np.inf
    # one run each: every replicate is the same, so the interval is the point
    point, lo, hi = stats.bootstrap_efficiency_ratio(grid, candidate[:1], np.array([50.0]), 10_000, 200,
                                                     np.random.default_rng(0))
    assert point == lo == hi == pytest.approx(0.3)


def test_curves_on_a_common_grid_and_their_band():
    grid, values = stats.align_curves([(np.array([0, 10, 20]), np.array([0.0, 10.0, 20.0])),
                                       (np.array([0, 5, 20, 30]), np.array([0.0, 1.0, 4.0, 9.0]))])
    assert grid.tolist() == [0, 5, 10, 20]  # up to 20: the first run ends there
    assert values.tolist() == [[0, 5, 10, 20], [0, 1, 2, 4]]
    mean, lo, hi = stats.mean_band(np.array([[1.0, 2.0], [1.0, 2.0]]), 100, np.random.default_rng(0))
    assert mean.tolist() == lo.tolist() == hi.tolist() == [1.0, 2.0]


# --- synthetic run directories ----------------------------------------------------------------------

# eval/return_mean at env steps 250, 500, 750, 1000 (total_steps 1000); final score = mean of the last 3.
CURVES = {
    ("InvertedPendulum-v5", "mbpo"): [[10, 400, 800, 1000], [20, 600, 1000, 1000], [0, 200, 600, 900]],
    ("InvertedPendulum-v5", "sac"): [[10, 50, 100, 150], [0, 100, 200, 300], [5, 20, 40, 60]],
    ("HalfCheetah-v5", "mbpo"): [[0, 10, 40, 70], [0, 20, 50, 80], [0, 30, 60, 90]],
    ("HalfCheetah-v5", "sac"): [[0, 5, 10, 15], [0, 0, 20, 40], [0, 30, 50, 70]],
}
# normalise with these instead of the documented returns, so that the numbers below are simple
REFERENCE_ARGS = ["--reference", "InvertedPendulum-v5=0,1000", "--reference", "HalfCheetah-v5=0,100"]
WARMUP = 250  # learning_steps = env_steps - 250


def write_run(path: Path, env: str, algo: str, seed: int, returns, total_steps: int = 1000,
              checkpoint: bool = True, learning_steps: bool = True, **overrides) -> Path:
    run = RunDirectory(path)
    run.create(make_config(env, {"algo": algo, "seed": seed, "total_steps": total_steps, **overrides}))
    for i, value in enumerate(returns):
        steps = 250 * (i + 1)
        record = {"env_steps": steps, "epoch": i, "eval/return_mean": float(value)}
        if learning_steps:
            record["learning_steps"] = max(0, steps - WARMUP)
        run.append_metrics(record)
    if checkpoint:
        run.checkpoint_path.write_bytes(b"not read by the report")
    return path


@pytest.fixture(scope="module")
def study_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "study"
    for (env, algo), curves in CURVES.items():
        for seed, returns in enumerate(curves):
            no_checkpoint = (env, algo, seed) == ("HalfCheetah-v5", "sac", 0)
            write_run(root / env / algo / f"seed{seed}", env, algo, seed, returns, checkpoint=not no_checkpoint)
    # stopped at 500 of 1000 steps: listed, not used
    write_run(root / "InvertedPendulum-v5" / "mbpo" / "seed3", "InvertedPendulum-v5", "mbpo", 3, [0, 0])
    return root


@pytest.fixture
def study(study_template, tmp_path) -> Path:
    """A fresh copy per test (some tests damage it)."""
    return Path(shutil.copytree(study_template, tmp_path / "study"))


class _HTML(HTMLParser):
    """The tables (by id: header and rows of cell text) and images of a report.html."""

    def __init__(self):
        super().__init__()
        self.tables, self.images = {}, []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def parse_report(out: Path) -> _HTML:
    parser = _HTML()
    parser.feed((out / "report.html").read_text())
    return parser


def rows_by(table, *key_columns):
    header, rows = table[0], table[1:]
    return {tuple(row[header.index(c)] for c in key_columns): dict(zip(header, row)) for row in rows}


def test_report_numbers_tables_images_and_incomplete_runs(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--reps", "200", "--threshold-levels", "0.5",
                 *REFERENCE_ARGS]) == 0
    html = parse_report(out)

    # every figure is embedded as a PNG, is also a file beside the report, and report.md links it
    expected = {"curve_InvertedPendulum-v5.png", "curve_HalfCheetah-v5.png", "aggregates.png", "profiles.png",
                "improvement.png"}
    assert {img["data-file"] for img in html.images} == expected
    markdown = (out / "report.md").read_text()
    for img in html.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        data = base64.b64decode(img["src"][len(prefix):])
        assert data.startswith(PNG_SIGNATURE) and data == (out / img["data-file"]).read_bytes()
        assert f"]({img['data-file']})" in markdown
    assert sorted(p.name for p in out.iterdir()) == sorted(expected | {"report.md", "report.html"})
    assert set(html.tables) == {"final-scores", "aggregates", "improvement", "thresholds", "efficiency", "runs",
                                "incomplete", "references"}
    for table_id, table in html.tables.items():
        assert len(table) > 1, f"table {table_id} has no rows"

    # final scores: mean of the last three evaluations per seed, then the mean over seeds
    finals = rows_by(html.tables["final-scores"], "env", "group")
    assert finals[("InvertedPendulum-v5", "mbpo")]["final score"].startswith("722 [")  # (733.3 + 866.7 + 566.7) / 3
    assert finals[("InvertedPendulum-v5", "mbpo")]["seeds"] == "3"  # the stopped run is not one of them
    assert finals[("HalfCheetah-v5", "sac")]["normalised"].startswith("0.27 [")  # (10 + 20 + 50) / 3 / 100

    # IQM of the normalised scores pooled over both envs (6 runs: the middle 4)
    aggregates = rows_by(html.tables["aggregates"], "group")
    assert aggregates[("mbpo",)]["IQM"].startswith("0.60 [")  # .4 .5 [.5667 .6 .7333] .8667 -> (.5+.5667+.6+.7333)/4
    assert aggregates[("sac",)]["IQM"].startswith("0.15 [")  # .04 [.1 .1 .2 .2] .5

    # P(mbpo > sac): 1 on InvertedPendulum; on HalfCheetah 40, 50, 60 vs 10, 20, 50 -> (2 + 2.5 + 3) / 9
    improvement = rows_by(html.tables["improvement"], "X", "Y")[("mbpo", "sac")]
    assert improvement["P(X > Y)"].startswith(f"{(1 + 7.5 / 9) / 2:.2f} [")

    # steps to a normalised score of 0.5 (return 500 / 50): median over seeds, seeds reaching it
    thresholds = rows_by(html.tables["thresholds"], "env", "normalised")
    assert thresholds[("InvertedPendulum-v5", "0.50")]["mbpo"] == "750 (3/3)"  # 750, 500, 750
    assert thresholds[("InvertedPendulum-v5", "0.50")]["sac"] == "not reached (0/3)"
    assert thresholds[("HalfCheetah-v5", "0.50")]["sac"] == "not reached (1/3)"  # only seed 2, at 750

    # sac's final 113.3 on InvertedPendulum: mbpo's mean curve (10, 400, 800, 966.7) is past it at 500
    efficiency = rows_by(html.tables["efficiency"], "env", "baseline Y")
    assert efficiency[("InvertedPendulum-v5", "sac")]["candidate's steps"] == "500"
    assert efficiency[("InvertedPendulum-v5", "sac")]["ratio"].startswith("0.50 [")
    assert efficiency[("HalfCheetah-v5", "sac")]["ratio"].startswith("0.75 [")  # 26.7: reached at 750

    # incomplete runs are listed: the stopped one unused, the one without a checkpoint used
    incomplete = rows_by(html.tables["incomplete"], "env", "group", "seed")
    stopped = incomplete[("InvertedPendulum-v5", "mbpo", "3")]
    assert stopped["reason"] == "stopped at 500 of 1,000 env steps" and stopped["used"] == "no"
    no_checkpoint = incomplete[("HalfCheetah-v5", "sac", "0")]
    assert no_checkpoint["checkpoint"] == "no" and no_checkpoint["used"] == "yes"
    assert len(incomplete) == 2
    assert "stopped at 500 of 1,000 env steps" in markdown
    assert "x axis: env_steps" in markdown and "wrote" in capsys.readouterr().out


def test_learning_steps_axis(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--reps", "200", "--x", "learning_steps",
                 "--threshold-levels", "0.5", *REFERENCE_ARGS]) == 0
    html = parse_report(out)
    assert any("against learning_steps" in img["alt"] for img in html.images)
    thresholds = rows_by(html.tables["thresholds"], "env", "normalised")
    assert thresholds[("InvertedPendulum-v5", "0.50")]["mbpo"] == "500 (3/3)"  # 500, 250, 500 learning steps
    # a record without learning_steps (written before the key existed) is refused, naming the file
    old = write_run(study / "old", "InvertedPendulum-v5", "sac", 7, [1, 2, 3, 4], learning_steps=False)
    out2 = tmp_path / "report2"
    capsys.readouterr()
    assert main(["report", str(study), "--out", str(out2), "--x", "learning_steps"]) == 2
    err = capsys.readouterr().err
    assert str(old / "metrics.jsonl") in err and "has no learning_steps" in err and "--x env_steps" in err
    assert not out2.exists()


def _corrupt(lines):
    def write(path: Path):
        with open(path / "metrics.jsonl", "a") as f:
            f.write("".join(line + "\n" for line in lines))
    return write


@pytest.mark.parametrize("lines, words", [
    (['{"env_steps": 1250, "eval/return_mean": 3'], "line 5 is not valid JSON"),  # cut off mid-write
    (['[1250, 3.0]'], "line 5 is not a JSON object"),
    (['{"epoch": 4, "eval/return_mean": 3.0}'], "line 5 has no env_steps"),
    (['{"env_steps": 750, "eval/return_mean": 3.0}'], "line 5: env_steps 750 does not follow 1000"),
    (['{"env_steps": 1250, "eval/return_mean": NaN}'], "line 5: eval/return_mean is nan"),
])
def test_a_corrupt_metrics_file_is_a_one_line_error_and_nothing_is_written(study, tmp_path, capsys, lines, words):
    bad = study / "HalfCheetah-v5" / "mbpo" / "seed1"
    _corrupt(lines)(bad)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("an earlier report")  # replaced by a good run, kept by a failed one
    assert main(["report", str(study), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(bad / "metrics.jsonl") in err and words in err
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "an earlier report"
    assert not any(p.name.startswith(".report") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args, words", [
    (["--final-window", "0"], "--final-window 0: must be at least 1"),
    (["--reps", "10"], "--reps 10: must be at least 100"),
    (["--level", "1.5"], "--level 1.5"),
    (["--threshold-levels", "0.5,x"], "--threshold-levels: 'x' is not a number"),
    (["--reference", "Hopper-v5=5"], "expected ENV=RANDOM,REFERENCE"),
    (["--reference", "Hopper-v5=5,1"], "must be above the random one"),
    (["--threshold", "Hopper-v5=abc"], "'abc' is not a number"),
    (["--threshold", "Hopper-v5=100"], "no run on Hopper-v5"),
    (["--group-by", "sac.hidden_widht"], "--group-by sac.hidden_widht: not a config field"),
    (["--candidate", "mpbo"], "--candidate 'mpbo': no such group"),
])
def test_bad_options_are_one_line_errors(study, tmp_path, capsys, args, words):
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not out.exists()


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run directories" in capsys.readouterr().err
    run = write_run(tmp_path / "run", "InvertedPendulum-v5", "mbpo", 0, [1, 2, 3, 4])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main(["report", str(run), "--out", str(tmp_path / "notes")]) == 2
    assert "holds files that are not a report" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    assert main(["report", str(run), str(tmp_path / "empty")]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


def test_group_by_splits_an_algorithm_and_a_mix_is_noted(tmp_path):
    root = tmp_path / "ablation"
    for ratio in (0.05, 0.5):
        for seed in range(2):
            write_run(root / f"r{ratio}" / f"s{seed}", "InvertedPendulum-v5", "mbpo", seed, [0, 1, 2, 3],
                      **{"mbpo.real_ratio": ratio})
    write_run(root / "sac", "InvertedPendulum-v5", "sac", 0, [0, 1, 1, 1])
    out = tmp_path / "pooled"
    assert main(["report", str(root), "--out", str(out), "--reps", "100"]) == 0
    assert "its runs differ in mbpo.real_ratio (0.05, 0.5)" in (out / "report.md").read_text()
    out = tmp_path / "split"
    assert main(["report", str(root), "--out", str(out), "--reps", "100", "--group-by", "mbpo.real_ratio"]) == 0
    groups = {row[1] for row in parse_report(out).tables["final-scores"][1:]}
    assert groups == {"mbpo mbpo.real_ratio=0.05", "mbpo mbpo.real_ratio=0.5", "sac mbpo.real_ratio=1.0"}
    assert "differ in" not in (out / "report.md").read_text()
    # both mbpo groups are candidates: each is compared with every other group
    pairs = {(row[0], row[1]) for row in parse_report(out).tables["improvement"][1:]}
    assert len(pairs) == 4


def test_a_label_is_a_group_of_its_own_and_labelled_mbpo_groups_are_candidates(tmp_path):
    # a study's variants reach the report as the config's label (docs/sweeps.md)
    root = tmp_path / "ablation"
    for label, returns in (("k1", [0, 1, 2, 3]), ("k_long", [0, 1, 1, 2])):
        for seed in range(2):
            write_run(root / label / f"s{seed}", "InvertedPendulum-v5", "mbpo", seed, returns, label=label)
    write_run(root / "sac", "InvertedPendulum-v5", "sac", 0, [0, 1, 1, 1], label="no_model_g20")
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reps", "100"]) == 0
    report = parse_report(out)
    assert {row[1] for row in report.tables["final-scores"][1:]} == {"mbpo-k1", "mbpo-k_long", "sac-no_model_g20"}
    pairs = {(row[0], row[1]) for row in report.tables["improvement"][1:]}
    assert {c for c, _ in pairs} == {"mbpo-k1", "mbpo-k_long"} and len(pairs) == 4


def test_the_cli_loads_no_numpy_until_a_report_is_made():
    code = "import sys, mbpo_ray.cli; print('numpy' in sys.modules, 'matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_an_env_without_reference_returns_is_reported_but_not_aggregated(tmp_path):
    root = tmp_path / "mixed"
    for algo, returns in (("mbpo", [0, 1, 2, 3]), ("sac", [0, 1, 1, 1])):
        write_run(root / "ip" / algo, "InvertedPendulum-v5", algo, 0, returns)
        write_run(root / "pendulum" / algo, "Pendulum-v1", algo, 0, [-1500, -1200, -900, -600])
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reps", "100", "--threshold", "Pendulum-v1=-1000"]) == 0
    html = parse_report(out)
    finals = rows_by(html.tables["final-scores"], "env", "group")
    assert finals[("Pendulum-v1", "mbpo")]["normalised"] == "no reference"
    assert finals[("Pendulum-v1", "mbpo")]["final score"].startswith("-900 [")  # (-1200 - 900 - 600) / 3
    assert aggregates_runs(html) == {"mbpo": "1", "sac": "1"}  # InvertedPendulum only
    assert "Pendulum-v1 (no reference return)" in (out / "report.md").read_text()
    # a raw threshold still works there: -900 at 750 steps
    assert rows_by(html.tables["thresholds"], "env", "threshold (return)")[("Pendulum-v1", "-1,000")]["mbpo"] \
        == "750 (1/1)"
    # the probability of improvement uses raw scores, so it covers both envs (a tie on Pendulum-v1)
    assert rows_by(html.tables["improvement"], "X", "Y")[("mbpo", "sac")]["envs"] == "2"


def aggregates_runs(html):
    return {row[0]: row[1] for row in html.tables["aggregates"][1:]}


def test_the_reference_table_in_the_docs_matches_the_code():
    from mbpo_ray.analysis.references import REFERENCES

    text = (Path(__file__).resolve().parents[1] / "docs" / "published_results.md").read_text()
    section = text.split("## Normalised scores", 1)[1]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in REFERENCES:
            documented[cells[0]] = (float(cells[1].replace(",", "")), float(cells[2].replace(",", "")))
    assert documented == {env: (ref.random, ref.reference) for env, ref in REFERENCES.items()}


def test_random_returns_are_measured_reproducibly():
    from mbpo_ray.analysis.random_returns import random_returns

    first = random_returns("InvertedPendulum-v5", 3, seed=0)
    assert first == random_returns("InvertedPendulum-v5", 3, seed=0)
    # reward 1 per step upright: a random policy drops the pole within a few dozen steps (5.2 on
    # average over 100 episodes), far from the time limit's 1,000
    assert len(first) == 3 and all(0 <= r < 1000 for r in first)


def test_a_runs_online_wandb_folder_is_not_taken_for_a_run(tmp_path):
    # an online W&B run keeps the run's config (with env_id and algo) in
    # wandb/run-<time>-<id>/files/config.yaml, beside W&B's own files
    root = tmp_path / "study"
    run_dir = write_run(root / "mbpo-s0", "InvertedPendulum-v5", "mbpo", 0, [0, 1, 2, 3])
    files = run_dir / "wandb" / "run-20261207_101010-a1b2c3d4" / "files"
    files.mkdir(parents=True)
    (files / "config.yaml").write_text("_wandb:\n  value: {cli_version: 0.31.0}\nenv_id:\n  value: InvertedPendulum-v5\n"
                                       "algo:\n  value: mbpo\nseed:\n  value: 0\n")
    (files / "wandb-summary.json").write_text("{}")
    (files.parent / "run-a1b2c3d4.wandb").write_bytes(b"")
    from mbpo_ray.analysis.report import find_run_dirs

    assert find_run_dirs([root]) == [run_dir.resolve()]
    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out), "--reps", "100"]) == 0
    assert aggregates_runs(parse_report(out)) == {"mbpo": "1"}


def test_aggregates_weigh_each_env_the_same_when_seed_counts_differ():
    # env A: one run at 0; env B: three runs at 1. Pooled, B's three runs outvote A (IQM 1, gap
    # 0.25); with each env weighing half, the middle half of the weight is a quarter at 0 and a
    # quarter at 1 (IQM 0.5) and the gap is the mean of the env gaps (1 + 0) / 2
    tasks = [np.array([0.0]), np.array([1.0, 1.0, 1.0])]
    assert stats.aggregate_iqm(tasks) == pytest.approx(0.5)
    assert stats.optimality_gap(tasks) == pytest.approx(0.5)
    # equal counts: the pooled trimmed mean, floor(n / 4) cut from each end, as before
    equal = [np.array([0.0, 0.2, 0.9]), np.array([0.4, 1.0, 3.0])]
    assert stats.aggregate_iqm(equal) == pytest.approx(stats.trimmed_mean(np.concatenate(equal)))
    assert stats.optimality_gap(equal) == pytest.approx(1 - np.minimum(np.concatenate(equal), 1).mean())
    # the weighted IQM on bootstrap replicates (leading axes) matches replicate by replicate
    reps = [np.array([[0.0], [2.0]]), np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 3.0]])]
    got = stats.aggregate_iqm(reps)
    assert got.shape == (2,)
    assert got[0] == pytest.approx(0.5)
    # replicate 2: sorted 0 (1/6), 0 (1/6), 2 (1/2), 3 (1/6): the middle half is 1/12 of the
    # second 0 and 5/12 of the 2
    assert got[1] == pytest.approx((5 / 12 * 2) / 0.5)


def test_wall_seconds_axis_sums_a_resumed_runs_processes(study, tmp_path, capsys):
    """--x wall_seconds (the compute axis): perf/wall_seconds counts from each process's start, so
    a resumed run's seconds go on from its last record before the resume; a run without the key
    is refused, naming its file."""
    runs = []
    for seed, walls in ((0, [10.0, 20.0, 5.0, 15.0]), (1, [12.0, 24.0, 36.0, 48.0])):  # seed 0 resumed after 500
        path = write_run(tmp_path / "wall" / f"s{seed}", "InvertedPendulum-v5", "mbpo", seed, [100, 500, 900, 1000])
        records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        (path / "metrics.jsonl").write_text("".join(
            json.dumps({**r, "perf/wall_seconds": w}) + "\n" for r, w in zip(records, walls)))
        runs.append(path)
    options = ReportOptions(dirs=[tmp_path / "wall"], out=tmp_path / "out", x_axis="wall_seconds")
    loaded = [load_run(p) for p in runs]
    for run in loaded:
        prepare_run(run, options)
    assert loaded[0].x.tolist() == [10.0, 20.0, 25.0, 35.0] and loaded[1].x.tolist() == [12.0, 24.0, 36.0, 48.0]
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "wall"), "--out", str(out), "--reps", "200", "--x", "wall_seconds",
                 *REFERENCE_ARGS]) == 0
    html = parse_report(out)
    assert any("against wall_seconds" in img["alt"] for img in html.images)
    write_run(tmp_path / "wall" / "old", "InvertedPendulum-v5", "mbpo", 7, [1, 2, 3, 4])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "wall"), "--out", str(tmp_path / "r2"), "--x", "wall_seconds"]) == 2
    err = capsys.readouterr().err
    assert "has no perf/wall_seconds" in err and str(tmp_path / "wall" / "old" / "metrics.jsonl") in err
