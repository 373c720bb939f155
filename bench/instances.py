"""Several servers on one PostgreSQL database (the several-servers issue): run submissions
per second and event fan-out to SSE clients, with one server and with two servers of the
same database and data directory, side by side in one run, and the server CPU time per
submission in each case (on two cores the gain is bounded; the CPU per request lets the
scaling be judged on bigger machines).

- submissions: ``POST /api/v1/runs {"workflow": "noop@1", "start": true}`` at concurrency
  16 per server for ``--seconds`` (with two servers, one load generator each, at once);
- fan-out: ``--clients`` SSE clients of the user's events (all on the one server, or half
  on each), ``--runs`` quick runs submitted through the first server; the time until every
  client has received every event of those runs.

    python -m bench.instances [--seconds 5] [--clients 200] [--runs 20]

A fresh database is made on ``FLOWDECK_BENCH_PG`` (default the local PostgreSQL, user
postgres; see bench.queries) and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench.common import Figure, pg_database, report, scratch_dir
from bench.loadgen import generator, rate
from bench.server import server

API = "/api/v1"
NOOP = 'name: noop\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICKS


@contextmanager
def servers(count: int) -> Iterator[list[tuple[str, str, int]]]:
    """``count`` servers of one fresh database and one data directory: (url, token, pid)."""
    with (
        pg_database() as db,
        tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp,
        ExitStack() as st,
    ):
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        shared = {"database_url": db, "data_dir": str(data)}
        found = []
        for _ in range(count):
            url, token, _data, pid = st.enter_context(server(**shared))
            found.append((url, token, pid))
        with httpx.Client(base_url=found[0][0], headers=_auth(found[0][1])) as c:
            r = c.post(f"{API}/workflows", content=NOOP, headers={"content-type": "text/yaml"})
            r.raise_for_status()
        yield found


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submissions(found: list[tuple[str, str, int]], seconds: float) -> tuple[float, float]:
    """(runs/s over all servers, server CPU ms per submission)."""
    body = {"workflow": "noop@1", "start": True}
    for url, token, _pid in found:  # warm-up
        rate(url, token, "POST", f"{API}/runs", body, concurrency=16, seconds=1)
    rates: list[float] = [0.0] * len(found)
    before = sum(cpu_s(pid) for _u, _t, pid in found)

    def one(i: int) -> None:
        url, token, _pid = found[i]
        rates[i] = rate(url, token, "POST", f"{API}/runs", body, concurrency=16, seconds=seconds)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(found))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = sum(cpu_s(pid) for _u, _t, pid in found) - before
    total = sum(rates)
    return total, used / (total * seconds) * 1000


def last_event(found: list[tuple[str, str, int]]) -> int:
    url, token, _ = found[0]
    with httpx.Client(base_url=url, headers=_auth(token)) as c:
        ids = [e["id"] for e in c.get(f"{API}/events", params={"limit": 1000}).json()]
    return max(ids or [0])


async def fan_out(found: list[tuple[str, str, int]], clients: int, runs: int, after: int) -> float:
    """Seconds from the first submission until every client has every event of the runs."""
    url0, token, _ = found[0]
    ready = asyncio.Event()
    connected = 0
    wanted: set[int] = set()
    done = [asyncio.Event() for _ in range(clients)]
    got: list[set[int]] = [set() for _ in range(clients)]
    run_ids: set[str] = set()

    async def client(i: int) -> None:
        nonlocal connected
        base = found[i % len(found)][0]
        headers = {**_auth(token), "Last-Event-ID": str(after)}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=None) as http,
            aconnect_sse(http, "GET", f"{API}/events") as source,
        ):
            connected += 1
            if connected == clients:
                ready.set()
            async for sse in source.aiter_sse():
                if sse.event != "message" and not sse.id:
                    continue
                got[i].add(int(sse.id))
                if wanted and wanted <= got[i]:
                    done[i].set()
                    return

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.wait_for(ready.wait(), 120)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url0, headers=_auth(token), timeout=60) as c:
        for _ in range(runs):
            r = await c.post(f"{API}/runs", json={"workflow": "noop@1", "start": True})
            run_ids.add(r.json()["id"])
        while True:  # every run ended: its events are all known
            states = [(await c.get(f"{API}/runs/{rid}")).json()["state"] for rid in run_ids]
            if all(s in ("succeeded", "failed") for s in states):
                break
            await asyncio.sleep(0.05)
        events = (await c.get(f"{API}/events", params={"limit": 1000, "after": after})).json()
        wanted.update(e["id"] for e in events if e["run_id"] in run_ids)
    for i in range(clients):
        if wanted <= got[i]:
            done[i].set()
    await asyncio.wait_for(asyncio.gather(*(d.wait() for d in done)), 120)
    elapsed = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results: dict[int, tuple[float, float, float]] = {}
    for count in (1, 2):
        with servers(count) as found:  # fan-out first: submissions leave a long queue
            spread = asyncio.run(fan_out(found, args.clients, args.runs, last_event(found)))
            subs, cpu_ms = submissions(found, args.seconds)
        results[count] = (subs, cpu_ms, spread)
        print(
            f"  {count} server(s): {subs:.0f} runs/s, {cpu_ms:.2f} ms server CPU per "
            f"submission; {args.clients} SSE clients had every event of {args.runs} runs "
            f"{spread:.2f} s after the first submission",
            flush=True,
        )
    (s1, c1, f1), (s2, c2, f2) = results[1], results[2]
    report(
        "instances",
        [
            Figure("run submissions, two servers", s2, "runs/s", "one server", s1),
            Figure("server CPU per submission, two servers", c2, "ms", "one server", c1),
            Figure(f"SSE fan-out to {args.clients} clients, two servers", f2, "s", "one", f1),
        ],
        {"generator": generator(), "cpus": os.cpu_count()},
    )


if __name__ == "__main__":
    main()
