"""`mbpo-ray report DIR... [--out DIR]`: compare the runs found under study folders and run
directories (docs/report.md says what every number means and how it is computed).

Reading: every folder under each DIR that holds config.yaml and metrics.jsonl is a run directory
(mbpo_ray.run_dir). A metrics file that cannot be read is an error naming the file and line,
raised before anything is written. Runs that stopped before their config's total_steps, or have
no checkpoint.pt, are listed in the report; only the first kind is left out of the statistics.

Writing: report.md (figures as relative PNG links), report.html (figures embedded as base64 PNG,
one self-contained file) and the PNGs, all rendered in memory and then moved into --out in one
step, so an error never leaves a half-written report.

The package's parts: ``options`` (the command's options), ``runs`` (finding and reading runs),
``document`` (blocks, formats, the Markdown and HTML renderers, plot helpers), ``sections`` (the
report's sections) and ``output`` (from options to written files).
"""
import importlib

# numpy and matplotlib come with the report's modules: the CLI imports ``options`` from here
# before it knows a report is asked for, so the rest is imported when first used.
_LAZY = {"make_report": "output", "run_report": "output", "find_run_dirs": "runs"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
