"""The machine a benchmark ran on, as its results record it, and the writing of results."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from mbpo_ray.devices import cpu_model  # noqa: F401  (the benchmarks' machine name: one owner)


def machine_stamp() -> dict:
    """What every result file records of where and when it was measured: the CPU model (not
    just the architecture), its logical CPUs and the date."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "date": datetime.date.today().isoformat()}


def write_results(out: str, result: dict) -> None:
    """Write a benchmark's figures so far as JSON. Called after every measurement by the
    benchmarks that benchmarks/gpu_check.sh runs under time limits: one cut short keeps what it
    measured."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
