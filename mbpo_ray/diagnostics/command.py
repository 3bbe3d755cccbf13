"""`mbpo-ray analyze KIND RUN_DIR [--out DIR]` (mbpo_ray/cli.py): runs one analysis, or every
one with ``report`` (docs/diagnostics.md)."""
from __future__ import annotations

import sys
from typing import Any, Dict

from mbpo_ray.diagnostics.params import REPORT_ORDER, AnalyzeOptions, DiagnosticsError, parse_analyze


def run_kind(kind: str, run, options: AnalyzeOptions) -> Dict[str, Any]:
    """One analysis; writes OUT/KIND.png and OUT/KIND.json and returns the numbers."""
    params, out = options.params[kind], options.out
    if kind == "bound":
        from mbpo_ray.diagnostics.bound import analyze_bound

        return analyze_bound(run, out, params, options.bound)
    if kind == "compounding":
        from mbpo_ray.diagnostics.compounding import analyze_compounding

        return analyze_compounding(run, out, params)
    if kind == "shift":
        from mbpo_ray.diagnostics.shift import analyze_shift

        return analyze_shift(run, out, params)
    if kind == "exploitation":
        from mbpo_ray.diagnostics.exploitation import analyze_exploitation

        return analyze_exploitation(run, out, params)
    if kind == "disagreement":
        from mbpo_ray.diagnostics.disagreement import analyze_disagreement

        return analyze_disagreement(run, out, params)
    if kind == "flow":
        from mbpo_ray.diagnostics.flow import analyze_flow

        return analyze_flow(run, out, params)
    raise DiagnosticsError(f"analyze {kind!r}: unknown KIND")


def analyze(options: AnalyzeOptions) -> Dict[str, Any]:
    """Run what ``options`` asks for; for ``report`` returns {kind: {"numbers", "error"}} and
    writes report.html, an analysis that cannot run on the run giving its one-line reason."""
    from mbpo_ray.devices import resolve_device
    from mbpo_ray.errors import ConfigError

    try:
        device = resolve_device(options.device)
    except ConfigError as exc:
        raise DiagnosticsError(f"--device: {exc}") from None
    run = None
    if options.run_dir is not None:
        from mbpo_ray.diagnostics.load import Run

        run = Run(options.run_dir, device)
    if options.command != "report":
        return run_kind(options.command, run, options)
    results: Dict[str, Dict[str, Any]] = {}
    for kind in REPORT_ORDER:
        try:
            results[kind] = {"numbers": run_kind(kind, run, options), "error": None}
        except DiagnosticsError as exc:
            results[kind] = {"numbers": None, "error": str(exc)}
            print(f"mbpo-ray analyze report: {kind} skipped: {exc}", file=sys.stderr)
    if run.cfg.algo == "mbpo" and results.get("compounding", {}).get("error") is None:
        _dream_for_report(run, options.out)
    from mbpo_ray.diagnostics.page import write_report

    write_report(run, options.out, results)
    return results


REPORT_DREAM_STEPS, REPORT_DREAM_SIZE = 100, 240


def _dream_for_report(run, out) -> None:
    """dream.gif and dream.mp4 beside compounding.png: the error curve's picture
    (docs/video.md). A video that cannot be made (no off-screen rendering here, an env whose
    observation is not its state) is one line on stderr; the report goes on."""
    from mbpo_ray.video.make import dream_model, dream_video
    from mbpo_ray.video import encode
    from mbpo_ray.video.policy import load_policy

    try:
        policy = load_policy(run)
        dream = dream_video(run, dream_model(run, policy), policy, REPORT_DREAM_STEPS, 1, REPORT_DREAM_SIZE, 0)
        encode.write_gif(dream.frames, out / "dream.gif", dream.fps, width=2 * REPORT_DREAM_SIZE)
        encode.write_mp4(dream.frames, out / "dream.mp4", dream.fps)
    except Exception as exc:  # noqa: BLE001  (the report never fails for its video)
        print(f"mbpo-ray analyze report: no dream video: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)


def run_analyze(args) -> int:
    """The `analyze` subcommand."""
    options = parse_analyze(args)
    analyze(options)
    out = options.out
    if options.command == "report":
        print(f"mbpo-ray analyze: wrote {out / 'report.html'} with the figures and numbers of each analysis")
    else:
        print(f"mbpo-ray analyze: wrote {out / (options.command + '.png')} and {out / (options.command + '.json')}")
    return 0
