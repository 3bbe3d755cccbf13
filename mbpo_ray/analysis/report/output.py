"""`mbpo-ray report`: from the options to the written files, every file rendered in memory first and
moved into --out in one step, so that an error never leaves a half-written report."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List


from mbpo_ray.analysis.report.options import ReportError, ReportOptions
from mbpo_ray.analysis.report.document import render_html, render_markdown
from mbpo_ray.analysis.report.runs import Run, find_run_dirs, group_label, load_run, prepare_run
from mbpo_ray.analysis.report.sections import Report

REPORT_FILES = ("report.md", "report.html")


# --- entry point --------------------------------------------------------------------------------------

def check_out(out: Path) -> None:
    """--out must be new, empty, or hold a previous report (which is replaced) and nothing else."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir()
                   if not (p.is_file() and (p.name in REPORT_FILES or p.suffix in (".png", ".gif")))]
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
    if options.videos:
        from mbpo_ray.analysis.report.videos import video_blocks

        videos = video_blocks(runs)
        blocks += videos
        files.update({item.filename: item.png for kind, item in videos if kind == "figure"})
    files["report.md"] = render_markdown(blocks).encode()
    files["report.html"] = render_html(blocks, "mbpo-ray report").encode()
    write_files(options.out, files)
    return options.out


def run_report(args) -> int:
    """The `report` subcommand (mbpo_ray/cli.py)."""
    from mbpo_ray.analysis.report.options import parse_options

    options = parse_options(args)
    out = make_report(options)
    pngs = sorted(p.name for p in out.glob("*.png"))
    print(f"mbpo-ray report: wrote {out / 'report.md'}, {out / 'report.html'} and {len(pngs)} figure(s)")
    return 0
