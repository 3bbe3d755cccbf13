"""The machine a benchmark ran on, as its results record it, and the writing of results."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(out: str, result: dict) -> None:
    """Write a benchmark's figures so far as JSON. Called after every measurement by the
    benchmarks that benchmarks/gpu_check.sh runs under time limits: one cut short keeps what it
    measured."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
