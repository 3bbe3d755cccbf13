"""The report as a document: blocks of text, tables and figures, with the number formats the
report uses, rendered to Markdown (figures as PNG links) or to one self-contained HTML page
(figures embedded), and the plotting helpers."""
from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple


from mbpo_ray.config import ALGOS, SUPPORTED_ENVS
from mbpo_ray.analysis.report.runs import Run


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


def ordered_envs(envs) -> List[str]:
    def key(env: str):
        env_id = env.split(" ")[0]
        return (SUPPORTED_ENVS.index(env_id) if env_id in SUPPORTED_ENVS else len(SUPPORTED_ENVS), env)
    return sorted(set(envs), key=key)


def ordered_groups(runs: Sequence[Run]) -> List[str]:
    algo_of = {r.group: r.algo for r in runs}
    return sorted(algo_of, key=lambda g: (ALGOS.index(algo_of[g]) if algo_of[g] in ALGOS else len(ALGOS), g))


def display_path(path: Path) -> str:
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
    png: bytes  # the file's bytes: a PNG, or a GIF when ``filename`` ends with .gif (a policy video)


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
            mime = "image/gif" if item.filename.endswith(".gif") else "image/png"
            out.append(f'<figure id="{item.id}"><img src="data:{mime};base64,{data}" '
                       f'alt="{html.escape(item.caption)}" data-file="{html.escape(item.filename)}">'
                       f"<figcaption>{_inline_html(item.caption)}</figcaption></figure>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# --- plots ------------------------------------------------------------------------------------------

def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    return buf.getvalue()


def group_colors(groups: Sequence[str]) -> Dict[str, Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(groups)}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
