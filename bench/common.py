"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "latest.json"
# The figures `make bench` compares against (committed; `python -m bench --save-baseline`
# makes it from latest.json): only on the same kind of machine (CPU model and cores).
BASELINE = RESULTS.with_name("baseline.json")
REGRESSION = 0.20  # a figure this much worse than the baseline's is printed as a regression


# The PostgreSQL server benchmarks make their databases on (dropped afterwards).
PG = os.environ.get("FLOWDECK_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


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


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (else the platform's processor)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                return value.strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "data_dir": str(scratch_dir()),
        "file_create_us": round(file_create_us(), 1),
    }


def same_kind(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two machines whose figures may be compared: the same CPU model and core count."""
    return bool(a.get("cpu")) and (a.get("cpu"), a.get("cores")) == (b.get("cpu"), b.get("cores"))


def worse_by(value: float, before: float, unit: str) -> float | None:
    """How much worse ``value`` is than ``before`` (0.25: 25 % worse; negative: better);
    None when they cannot be compared.  A rate (a unit per second) is better higher, any
    other figure (times, sizes) lower."""
    if not unit or before <= 0 or value != value or before != before:  # (NaN)
        return None
    if unit.endswith("/s"):
        return before / value - 1 if value > 0 else float("inf")
    return value / before - 1


def baseline_figures(bench: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The committed baseline's figures of ``bench`` by name, and why there are none."""
    try:
        data = json.loads(BASELINE.read_text())
    except OSError:
        return {}, "no bench/results/baseline.json"
    except ValueError as exc:
        return {}, f"bench/results/baseline.json is not JSON: {exc}"
    if not same_kind(data.get("machine", {}), machine()):
        theirs = data.get("machine", {})
        return {}, (
            f"the baseline comes from another kind of machine ({theirs.get('cpu')},"
            f" {theirs.get('cores')} cores): not compared"
        )
    figures = data.get("benchmarks", {}).get(bench, {}).get("figures", [])
    return {f["name"]: f for f in figures if "name" in f}, None


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def report(bench: str, figures: list[Figure], extra: dict[str, Any] | None = None) -> None:
    """Print the figures and merge them into bench/results/latest.json."""
    print(f"\n== {bench} (data in {scratch_dir()}: {file_create_us():.0f} us to create a file)")
    before, why_not = baseline_figures(bench)
    if why_not:
        print(f"  ({why_not})")
    for f in figures:
        print(
            f"  {f.name:<42} {f.value:>10.2f} {f.unit:<6} | baseline {f.baseline_name}: "
            f"{f.baseline:.2f} {f.unit} | ratio {f.ratio:.2f}"
            + (f" | goal {f.goal}" if f.goal else "")
        )
        old = before.get(f.name)
        worse = worse_by(f.value, float(old["value"]), f.unit) if old else None
        if worse is not None and worse > REGRESSION:
            print(
                f"  REGRESSION: {worse:.0%} worse than bench/results/baseline.json"
                f" ({old['value']:.2f} {f.unit}) [{bench}: {f.name}]"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data["machine"] = machine()
    data.setdefault("benchmarks", {})[bench] = {
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
        **(extra or {}),
    }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    import psycopg

    name = f"flowdeck_bench_{secrets.token_hex(4)}"
    admin = PG.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def database(backend: str) -> Iterator[dict[str, str]]:
    """Server settings for ``backend``: nothing for "sqlite" (the default store), a fresh
    database on :data:`PG` for "postgresql" (dropped afterwards)."""
    if backend == "sqlite":
        yield {}
        return
    with pg_database() as url:
        yield {"database_url": url}


BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
