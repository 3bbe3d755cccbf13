"""benchmarks/results/RESULTS.md reads every figure from a committed file: each result file it
names exists."""
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# a placeholder in a path (`baselines/ENV.json`, `rehearsal/FILE-STORAGE.json`) names a family
PLACEHOLDER = re.compile(r"\b[A-Z]{3,}\b")


def named_files(text: str):
    for name in re.findall(r"`([^`\s]+\.(?:json|jsonl|csv|png|txt|html))`", text):
        if not PLACEHOLDER.search(name):
            yield name.removeprefix("benchmarks/results/")


def named_folders(text: str):
    """The folders under benchmarks/results that RESULTS.md names (`mbpo_plus/study/runs/`); not
    the other folders it mentions (`benchmarks/`, a user's `runs/...`)."""
    for name in re.findall(r"`([^`\s]+/)`", text):
        name = name.removeprefix("benchmarks/results/")
        if not PLACEHOLDER.search(name) and (RESULTS / name.split("/")[0]).is_dir():
            yield name


def test_every_result_folder_named_in_results_md_holds_files():
    """A folder RESULTS.md points to (`mbpo_plus/study/runs/`) exists, with files in it (in CI's
    clean clone: committed ones; an ignored folder would be missing there)."""
    text = (RESULTS / "RESULTS.md").read_text()
    names = sorted(set(named_folders(text)))
    assert len(names) > 3
    empty = [n for n in names if not any(p.is_file() for p in (RESULTS / n).rglob("*"))]
    assert empty == []


def test_every_result_file_named_in_results_md_is_committed():
    text = (RESULTS / "RESULTS.md").read_text()
    names = sorted(set(named_files(text)))
    assert len(names) > 20  # the check sees the names (a broken pattern would pass vacuously)
    files = [p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*") if p.is_file()]
    # every name is relative to the results folder
    missing = [n for n in names if n not in files]
    assert missing == []
