"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "latest.json"


def scratch_dir() -> Path:
    """Where benchmark servers keep their data: ``$FLOWDECK_BENCH_DIR``, else
    ``bench/.scratch`` — the project's disk, as a real data directory would be.  Not /tmp:
    on some VMs creating a file there costs 0.3-0.9 ms of kernel time against 15 us on the
    rest of the same disk, and a step creates a few files (see :func:`file_create_us`)."""
    folder = Path(os.environ.get("FLOWDECK_BENCH_DIR") or Path(__file__).parent / ".scratch")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@functools.cache
def file_create_us(folder: Path | None = None) -> float:
    """Microseconds to create an empty file in a new directory under ``folder`` (default
    :func:`scratch_dir`); a step's logs, record and work directory cost a few of these."""
    with tempfile.TemporaryDirectory(dir=folder or scratch_dir()) as tmp:
        t0 = time.perf_counter()
        for i in range(200):
            (Path(tmp) / f"f{i}").touch()
        return (time.perf_counter() - t0) / 200 * 1e6


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    goal: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def report(bench: str, figures: list[Figure], extra: dict[str, Any] | None = None) -> None:
    """Print the figures and merge them into bench/results/latest.json."""
    print(f"\n== {bench} (data in {scratch_dir()}: {file_create_us():.0f} us to create a file)")
    for f in figures:
        print(
            f"  {f.name:<42} {f.value:>10.2f} {f.unit:<6} | baseline {f.baseline_name}: "
            f"{f.baseline:.2f} {f.unit} | ratio {f.ratio:.2f}"
            + (f" | goal {f.goal}" if f.goal else "")
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "data_dir": str(scratch_dir()),
        "file_create_us": round(file_create_us(), 1),
    }
    data.setdefault("benchmarks", {})[bench] = {
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
        **(extra or {}),
    }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
