"""Where the cost of a deep queue goes (a profile, not figures): what :mod:`bench.queue`
measures, taken apart.

- ``memory``: a server under tracemalloc (:mod:`bench.traced_server`); snapshots after
  ``--warm`` runs, after ``--runs`` more (the queue deep), and after the queue drained;
  prints the allocation sites that grew most between the first two, the objects (by type)
  the garbage collector tracks that grew, and the bytes per queued run;
- ``cpu``: ``py-spy record --gil`` (``pip install py-spy``) on a plain server for
  ``--seconds`` of submissions into a shallow queue, then again once ``--runs`` more wait
  in it; prints both submission rates and the functions whose share of the samples grew.

    python -m bench.queue_profile memory [--warm 2000] [--runs 20000]
    python -m bench.queue_profile cpu [--runs 20000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import httpx

from bench import rawhttp
from bench.common import scratch_dir
from bench.queue import ACTIVE, ONE, Store, server_rss
from bench.runs import push
from bench.server import server

API = "/api/v1"
BODY = {"workflow": "one@1", "start": True}
TOP = 15


def _submit(url: str, token: str, n: int) -> None:
    create = rawhttp.request(url, token, "POST", f"{API}/runs", BODY)
    asyncio.run(rawhttp.fixed_count(url, create, n, 16))


def _snapshot(folder: Path, name: str) -> tuple[tracemalloc.Snapshot, Counter[str]]:
    """Ask the traced server for a snapshot and wait for it."""
    want = folder / f"{name}.want"
    want.touch()
    while want.exists():
        time.sleep(0.2)
    snap = tracemalloc.Snapshot.load(str(folder / f"{name}.snap")).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    import json

    types: Counter[str] = Counter(json.loads((folder / f"{name}.types.json").read_text()))
    return snap, types


def _state(store: Store, pid: int, label: str) -> int:
    depth = store.count("queued")
    done = store.count("succeeded")
    print(f"  {label}: {depth} queued, {done} succeeded, RSS {server_rss(pid):.1f} MiB")
    return depth


def _diff(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot, deeper: int, per: str) -> None:
    """What grew from ``before`` to ``after``, also per one of ``deeper`` ``per``."""
    stats = after.compare_to(before, "lineno")
    grown = sum(s.size_diff for s in stats)
    print(f"  traced memory grew {grown / 2**20:.1f} MiB: {grown / max(deeper, 1):.0f} B {per}")
    for s in stats[:TOP]:
        frame = s.traceback[0]
        print(
            f"  {s.size_diff / 2**20:>8.2f} MiB {s.count_diff:>+9} blocks"
            f" {s.size_diff / max(deeper, 1):>7.0f} B/run  {frame.filename}:{frame.lineno}"
        )
    print("  the largest by whole traceback (innermost last):")
    for s in after.compare_to(before, "traceback")[:5]:
        print(f"  -- {s.size_diff / 2**20:.2f} MiB, {s.count_diff:+} blocks")
        for line in s.traceback.format(limit=8):
            print(f"     {line}")


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        folder = Path(tmp)
        os.environ["FLOWDECK_BENCH_TRACE"] = str(folder)
        with (
            server(module="bench.traced_server") as (url, token, data, pid),
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
        ):
            push(c, ONE)
            store = Store(data / "flowdeck.db")
            _submit(url, token, args.warm)
            shallow = _state(store, pid, f"after {args.warm} runs")
            a, types_a = _snapshot(folder, "a")
            _submit(url, token, args.runs)
            deep = _state(store, pid, f"after {args.runs} more")
            b, types_b = _snapshot(folder, "b")
            print(f"\n== deep ({deep}) against shallow ({shallow}) queue")
            _diff(b, a, deep - shallow, "per queued run")
            print("  objects tracked by the gc that grew most:")
            for name, n in (types_b - types_a).most_common(TOP):
                print(f"  {n:>9} {n / max(deep - shallow, 1):>6.2f}/run  {name}")
            while store.count(*ACTIVE):
                time.sleep(1)
            _state(store, pid, "drained")
            d, types_d = _snapshot(folder, "d")
            print(f"\n== drained against shallow ({shallow}) queue: what stays of runs that ended")
            _diff(d, a, args.runs, "per run submitted")
            for name, n in (types_d - types_a).most_common(TOP):
                print(f"  {n:>9} {n / args.runs:>6.2f}/run  {name}")
            store.close()


def _record(pid: int, seconds: float, out: Path, url: str, token: str) -> float:
    """py-spy samples of the server while it takes submissions for ``seconds``; the
    submissions/s meanwhile."""
    spy = subprocess.Popen(
        [
            shutil.which("py-spy") or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--gil",
            "--threads",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--duration",
            str(round(seconds)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(1)  # py-spy attaches
    req = rawhttp.request(url, token, "POST", f"{API}/runs", BODY)
    t0 = time.perf_counter()
    done = asyncio.run(rawhttp.for_duration(url, req, seconds - 1.5, 16))
    rate = done / (time.perf_counter() - t0)
    spy.wait(60)
    return rate


_LINE = re.compile(r":\d+\)")


_THREAD = re.compile(r"^thread \(\d+\): ")


def _shares(raw: Path) -> tuple[Counter[str], int]:
    """Inclusive samples of each function (lines merged) and of each thread (its name as
    ``thread NAME``) in py-spy's raw output (``--threads``)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        thread, *frames = stack.split(";")
        inclusive["thread " + _THREAD.sub("", thread)] += n
        for frame in {_LINE.sub(")", f) for f in frames}:
            inclusive[frame] += n
    return inclusive, total


def cpu(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp,
        server() as (url, token, data, pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        push(c, ONE)
        store = Store(data / "flowdeck.db")
        _submit(url, token, 500)
        shallow = _state(store, pid, "warm")
        rate_a = _record(pid, args.seconds, Path(tmp) / "a.txt", url, token)
        _submit(url, token, args.runs)
        deep = _state(store, pid, f"after {args.runs} more")
        rate_b = _record(pid, args.seconds, Path(tmp) / "b.txt", url, token)
        store.close()
        a, total_a = _shares(Path(tmp) / "a.txt")
        b, total_b = _shares(Path(tmp) / "b.txt")
    print(f"\n  submissions/s: {rate_a:.0f} at depth ~{shallow}, {rate_b:.0f} at depth ~{deep}")
    print(f"  GIL samples: {total_a} shallow, {total_b} deep ({args.seconds:.0f} s each)")
    print("  share of the GIL by thread, shallow -> deep:")
    for f in sorted((f for f in a | b if f.startswith("thread ")), key=lambda f: -b[f]):
        print(f"  {a[f] / total_a:>6.1%} -> {b[f] / total_b:>6.1%}  {f}")
    print("  share shallow -> deep (inclusive), the functions that grew most:")
    grown = sorted(b, key=lambda f: b[f] / total_b - a.get(f, 0) / total_a, reverse=True)
    for f in [f for f in grown if not f.startswith("thread ")][:TOP]:
        print(f"  {a.get(f, 0) / total_a:>6.1%} -> {b[f] / total_b:>6.1%}  {f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["memory", "cpu"])
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    memory(args) if args.what == "memory" else cpu(args)


if __name__ == "__main__":
    main()
