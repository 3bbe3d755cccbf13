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


def test_every_result_file_named_in_results_md_is_committed():
    text = (RESULTS / "RESULTS.md").read_text()
    names = sorted(set(named_files(text)))
    assert len(names) > 20  # the check sees the names (a broken pattern would pass vacuously)
    files = [p.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("*") if p.is_file()]
    # every name is relative to the results folder
    missing = [n for n in names if n not in files]
    assert missing == []
