"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import json
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "latest.json"


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
    print(f"\n== {bench}")
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
    data["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    data.setdefault("benchmarks", {})[bench] = {
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
        **(extra or {}),
    }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
