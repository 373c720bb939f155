"""The cost as the queue grows: ``--runs`` one-step ``/bin/true`` runs submitted back to back
(``POST /api/v1/runs`` with ``start: true``) by the raw-HTTP load generator at concurrency
16, against a server with default settings.

The scheduler starts runs far slower than they are submitted, so the queue deepens through
the whole submission.  Per 10 % slice of the submissions: that slice's submissions/s, the
server's resident memory at the slice's end (its process, plus the scheduler's when
``scheduler_process`` is on) and the queue depth then (a count on the SQLite file, read
only).  After the last submission every run is waited for; end to end is
``runs / (first submission to the last run's end)``.  Peak RSS is sampled every 0.5 s.

Figures: the last slice's rate against the first slice's, both read off a least-squares
line through the ten slices' rates (goal: within 5 %; a slice lasts seconds and its rate
alone moves by several per cent from one to the next, so the rates as measured are
reported beside, without a goal); peak RSS
against the RSS after the first slice (goal: independent of queue depth); end-to-end
runs/s against the spawn floor (``bench.runs.spawn_floor``).

    python -m bench.queue [--runs 100000] [--concurrency 16] [--million]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import shutil
import sqlite3
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import rawhttp
from bench.common import Figure, report, scratch_dir
from bench.loadgen import generator
from bench.runs import push, spawn_floor
from bench.server import rss_mb, server

API = "/api/v1"
SLICES = 10
SAMPLE_S = 0.5
ONE = 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'
# Disk a finished one-step run leaves in the data directory (its rows and events in
# SQLite, its folder with logs and work directory): 3.8 KB measured with ``--runs 20000``
# (76 MB); asked for twice over so that the WAL and page slack fit too.
DISK_PER_RUN = 8 * 1024
ACTIVE = ("staged", "queued", "running", "paused", "stopping")


@dataclass
class Slice:
    """One tenth of the submissions."""

    runs: int  # submitted by the slice's end
    rate: float  # submissions/s within the slice
    rss_mib: float  # server (+ scheduler process) at the slice's end
    depth: int  # runs queued at the slice's end


def server_pids(pid: int) -> list[int]:
    """The server and, when ``scheduler_process`` is on, its scheduler process (the step
    supervisor is a process of its own for every setting, and is left out)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"scheduler_process" in cmd:
                        pids.append(int(child))
    return pids


def server_rss(pid: int) -> float:
    """MiB resident of the server's processes."""
    total = 0.0
    for p in server_pids(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_mb(p)
    return total


class Store:
    """Read-only counts on the server's SQLite file (cheap: the state index)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.lock = threading.Lock()

    def count(self, *states: str) -> int:
        marks = ",".join("?" * len(states))
        with self.lock:
            row = self.conn.execute(
                f"SELECT count(*) FROM runs WHERE state IN ({marks})", states
            ).fetchone()
        return int(row[0])

    def last_end(self) -> float:
        """The epoch seconds of the latest run's end."""
        with self.lock:
            (text,) = self.conn.execute("SELECT max(finished_at) FROM runs").fetchone()
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    def close(self) -> None:
        self.conn.close()


class Sampler(threading.Thread):
    """Peak RSS every ``SAMPLE_S``; and, when a slice ends, its RSS and queue depth at once."""

    def __init__(self, pid: int, store: Store) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.store = store
        self.peak = 0.0
        self.ends: queue.Queue[tuple[int, int, float] | None] = queue.Queue()  # k, runs, rate
        self.at_ends: dict[int, tuple[float, int]] = {}

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, server_rss(self.pid))
            try:
                end = self.ends.get(timeout=SAMPLE_S)
            except queue.Empty:
                continue
            if end is None:
                return
            k, runs, rate = end
            rss = server_rss(self.pid)
            depth = self.store.count("queued")
            self.peak = max(self.peak, rss)
            self.at_ends[k] = (rss, depth)
            # Printed now: a million runs take hours to drain after the last slice.
            print(
                f"  slice {k + 1}: {runs} submitted, {rate:.0f}/s, RSS {rss:.1f} MiB,"
                f" {depth} queued",
                flush=True,
            )

    def finish(self) -> None:
        self.ends.put(None)
        self.join(60)


async def _submit(url: str, token: str, n: int, concurrency: int, sampler: Sampler) -> list[float]:
    """Submit ``n`` runs; the perf_counter times of the start and of each slice's end."""
    body = {"workflow": "one@1", "start": True}
    create = rawhttp.request(url, token, "POST", f"{API}/runs", body)
    bounds = [round(n * (k + 1) / SLICES) for k in range(SLICES)]
    times = [time.perf_counter()]
    answered = 0

    def on_response(_r: rawhttp.Response) -> None:
        nonlocal answered
        answered += 1
        if answered == bounds[len(times) - 1]:
            times.append(time.perf_counter())
            k = len(times) - 2
            runs = answered - (bounds[k - 1] if k else 0)
            sampler.ends.put((k, answered, runs / (times[-1] - times[-2])))

    await rawhttp.fixed_count(url, create, n, concurrency, on_response)
    return times


def _check_disk(runs: int) -> None:
    need = runs * DISK_PER_RUN
    free = shutil.disk_usage(scratch_dir()).free
    print(
        f"  {runs} runs need about {need / 2**30:.1f} GiB in {scratch_dir()}"
        f" ({free / 2**30:.1f} GiB free)"
    )
    if free < need:
        sys.exit(f"bench.queue: not enough disk for {runs} runs: set FLOWDECK_BENCH_DIR")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--million", action="store_true", help="1,000,000 runs")
    args = parser.parse_args()
    n: int = 1_000_000 if args.million else args.runs
    _check_disk(n)
    floor = 200 / spawn_floor(200, 1)
    with (
        server() as (url, token, data, pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        push(c, ONE)
        store = Store(data / "flowdeck.db")
        sampler = Sampler(pid, store)
        sampler.start()
        wall0 = time.time()
        times = asyncio.run(_submit(url, token, n, args.concurrency, sampler))
        while store.count(*ACTIVE):
            time.sleep(0.5)
        end_to_end = store.last_end() - wall0
        sampler.finish()
        failed = n - store.count("succeeded")
        store.close()
        disk = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    if failed:
        raise RuntimeError(f"{failed} of {n} runs did not succeed")
    slices = [
        Slice(
            runs=round(n * (k + 1) / SLICES),
            rate=(round(n * (k + 1) / SLICES) - round(n * k / SLICES)) / (times[k + 1] - times[k]),
            rss_mib=sampler.at_ends[k][0],
            depth=sampler.at_ends[k][1],
        )
        for k in range(SLICES)
    ]
    print("  slice  submitted   subs/s   RSS MiB   queued")
    for k, s in enumerate(slices):
        print(f"  {k + 1:>5} {s.runs:>10} {s.rate:>8.0f} {s.rss_mib:>9.1f} {s.depth:>8}")
    # The slices' rates are noisy (a 10 % slice is seconds long); a least-squares line
    # through them tells a trend from the noise: its change from the first slice to the
    # last, against its value at the first.
    fit = statistics.linear_regression(range(SLICES), [s.rate for s in slices])
    trend = fit.slope * (SLICES - 1) / fit.intercept
    spread = statistics.pstdev(s.rate for s in slices) / statistics.fmean(s.rate for s in slices)
    print(
        f"  submissions/s fitted over the slices: {trend:+.1%} from the first to the last"
        f" (slices spread {spread:.1%} around their mean)"
    )
    deepest = max(slices, key=lambda s: s.depth)
    grown = deepest.rss_mib - slices[0].rss_mib
    deeper = deepest.depth - slices[0].depth
    per_run_kb = grown * 1024 / deeper if deeper > 0 else 0.0
    print(
        f"  end to end {n / end_to_end:.0f} runs/s; peak RSS {sampler.peak:.1f} MiB;"
        f" {per_run_kb:.2f} KiB of RSS per queued run at the deepest point;"
        f" data dir {disk / n:.0f} bytes per run; load generator: {generator()}"
    )
    figures = [
        Figure(
            f"{n} queued runs: submissions/s of the last 10 %, fitted",
            fit.intercept + fit.slope * (SLICES - 1),
            "runs/s",
            "the first 10 %, fitted",
            fit.intercept,
            goal="within 5 % of the first slice",
        ),
        Figure(
            f"{n} queued runs: submissions/s of the last 10 %, as measured",
            slices[-1].rate,
            "runs/s",
            "the first 10 %, as measured",
            slices[0].rate,
        ),
        Figure(
            f"{n} queued runs: peak server RSS",
            sampler.peak,
            "MiB",
            "RSS after the first 10 %",
            slices[0].rss_mib,
            goal="independent of queue depth",
        ),
        Figure(
            f"{n} queued runs: end to end (c={args.concurrency})",
            n / end_to_end,
            "runs/s",
            "spawns/s floor",
            floor,
        ),
    ]
    report(
        "queue",
        figures,
        {
            "runs": n,
            "concurrency": args.concurrency,
            "generator": generator(),
            "slices": [asdict(s) for s in slices],
            "rate_trend": trend,
            "rate_spread": spread,
            "rss_kib_per_queued_run": per_run_kb,
            "deepest_queue": deepest.depth,
            "disk_bytes_per_run": disk / n,
        },
    )


if __name__ == "__main__":
    main()
