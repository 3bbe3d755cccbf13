"""`analyze report`: every analysis of a run on one HTML page (docs/diagnostics.md#report).

Each analysis writes its KIND.png and KIND.json into the output folder; report.html links the
images relatively (the folder can be moved or zipped as a whole) and shows the JSON numbers as
tables: the scalars, and the per-k / per-checkpoint / per-bin lists as rows. An analysis that
cannot run on this run (for example exploitation on a run without kept checkpoints) shows its
one-line reason instead."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from mbpo_ray.atomic import write_atomic

TITLES = {
    "flow": "Data flow and measured rates",
    "compounding": "Compounding model error (open-loop rollouts against the real env)",
    "disagreement": "Ensemble disagreement against nearness to the data",
    "shift": "Model error under policy shift (the paper's Figure 1)",
    "bound": "The bound's penalty against k, and the recommended k (the paper's Theorems 4.1-4.3)",
    "exploitation": "Return under the model against the real return (the paper's Figure 4)",
}
MAX_ROWS = 40  # longer lists are shown at evenly spaced rows, the first and the last included
SKIPPED = ("files", "trajectory", "params", "run")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return html.escape(text if len(text) <= 120 else text[:117] + "...")
    return html.escape(str(value))


def _scalars(numbers: Dict[str, Any], prefix: str = "") -> List[tuple]:
    rows = []
    for key, value in numbers.items():
        if key in SKIPPED:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()):
            rows += [(f"{name}.{k}", v) for k, v in value.items()]
        elif isinstance(value, dict):
            rows += _scalars(value, name + ".")
        elif not isinstance(value, list):
            rows.append((name, value))
    return rows


def _tables(numbers: Dict[str, Any]) -> List[tuple]:
    """(caption, header, rows) for each list of records, and for parallel per-k lists."""
    out = []
    for key, value in numbers.items():
        if key in SKIPPED:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            header = list(dict.fromkeys(k for v in value for k in v))
            out.append((key, header, [[v.get(h) for h in header] for v in value]))
        elif isinstance(value, dict):
            out += [(f"{key}.{c}", h, r) for c, h, r in _tables(value)]
    if "k" in numbers and isinstance(numbers["k"], list):
        columns = {k: v for k, v in numbers.items() if isinstance(v, list) and len(v) == len(numbers["k"])
                   and all(not isinstance(x, (dict, list)) for x in v)}
        if len(columns) > 1:
            header = list(columns)
            out.append(("against k", header, [[columns[h][i] for h in header] for i in range(len(numbers["k"]))]))
    return out


def _thin(rows: List[list]) -> List[list]:
    if len(rows) <= MAX_ROWS:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (MAX_ROWS - 1)) for i in range(MAX_ROWS)})
    return [rows[i] for i in idx]


def _section(kind: str, numbers: Optional[Dict[str, Any]], error: Optional[str], out: Path) -> str:
    parts = [f'<h2 id="{kind}">{html.escape(TITLES[kind])}</h2>']
    if error is not None:
        parts.append(f'<p class="error">Not available: {html.escape(error)}</p>')
        return "\n".join(parts)
    png = out / f"{kind}.png"
    if png.is_file():
        parts.append(f'<p><img src="{kind}.png" alt="{kind}"></p>')
    if kind == "compounding" and (out / "dream.gif").is_file():
        parts.append('<p><img src="dream.gif" alt="the model\'s dream beside reality"></p><p>The same thing seen: '
                     'the real env (left) and the best elite\'s open-loop dream of the same actions, the error '
                     'under them; the bar marks where the model left the real trajectory (<a href="dream.mp4">'
                     'dream.mp4</a>, docs/video.md).</p>')
    parts.append(f'<p>Numbers: <a href="{kind}.json">{kind}.json</a></p>')
    scalars = _scalars(numbers)
    if scalars:
        parts.append("<table><tr><th>quantity</th><th>value</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in scalars) + "</table>")
    for caption, header, rows in _tables(numbers):
        shown = _thin(rows)
        note = f" ({len(shown)} of {len(rows)} rows)" if len(shown) < len(rows) else ""
        parts.append(f"<table><caption>{html.escape(caption)}{note}</caption><tr>"
                     + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in shown)
                     + "</table>")
    return "\n".join(parts)


STYLE = """body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
.error { color: #a00; }"""


def write_report(run, out: Path, results: Dict[str, Dict[str, Any]]) -> Path:
    """report.html in ``out`` from {kind: {"numbers": ..., "error": ...}} in REPORT_ORDER."""
    title = f"mbpo-ray diagnostics: {run.path.name}"
    head = (f"<p>Run <code>{html.escape(str(run.path))}</code>: {html.escape(run.cfg.algo)} on "
            f"{html.escape(run.cfg.env_id)}, seed {run.cfg.seed}, runtime {html.escape(run.cfg.runtime)}, "
            f"{run.records[-1]['env_steps'] if run.records else 0} env steps recorded. What each analysis measures: "
            f"docs/diagnostics.md.</p>")
    toc = "<ul>" + "".join(f'<li><a href="#{k}">{html.escape(TITLES[k])}</a>'
                           + (" (not available)" if r["error"] else "") + "</li>" for k, r in results.items()) + "</ul>"
    body = "\n".join(_section(k, r["numbers"], r["error"], out) for k, r in results.items())
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{head}\n{toc}\n{body}\n</body></html>\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    write_atomic(path, page)
    return path
