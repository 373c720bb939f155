"""Event stream benchmarks (the events issue's goals):

- latency from a state change to its arrival at an SSE client: p50 and p99 (goal p99 <=
  20 ms), beside the round trip of a bare HTTP request to the same server;
- 1,000 concurrent SSE clients on one server: resident memory (goal <= 300 MB), and every
  client receives every event of a run, beside the idle server's memory.

The latency of an event is its arrival time at the client minus its `at` time, which the
server sets when it decides the change, before the commit: commit time is included.

    python -m bench.events [--runs 200] [--clients 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.common import Figure, percentile, report
from bench.server import rss_mb, server

API = "/api/v1"
QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _latency(url: str, token: str, runs: int) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    lat: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as listener,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c,
    ):
        await c.post(f"{API}/workflows", content=QUICK, headers={"content-type": "text/yaml"})
        floor: list[float] = []
        for _ in range(200):
            t0 = time.perf_counter()
            await c.get("/healthz")
            floor.append((time.perf_counter() - t0) * 1000)
        done = asyncio.Event()
        ready = asyncio.Event()
        finished: set[str] = set()

        async def listen() -> None:
            async with aconnect_sse(listener, "GET", f"{API}/events") as source:
                ready.set()
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    now = time.time()
                    event = json.loads(sse.data)
                    lat.append((now - _ts(event["at"])) * 1000)
                    if event["type"] == "run.succeeded":
                        finished.add(event["run_id"])
                        if len(finished) == runs:
                            done.set()
                            return

        task = asyncio.create_task(listen())
        await ready.wait()
        for _ in range(runs):  # one at a time: latency, not throughput
            r = await c.post(f"{API}/runs", json={"workflow": "quick@1", "start": True})
            r.raise_for_status()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(done.wait(), 120)
        await task
    return lat, floor


async def _many(url: str, token: str, clients: int, pid: int) -> tuple[float, int, int]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as pool:
        opened = 0
        all_open = asyncio.Event()
        run_ids: list[str] = []
        received: list[int] = [0] * clients

        async def client(i: int) -> None:
            nonlocal opened
            async with aconnect_sse(pool, "GET", f"{API}/events") as source:
                opened += 1
                if opened == clients:
                    all_open.set()
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    event = json.loads(sse.data)
                    received[i] += 1
                    if event["type"] == "run.succeeded":  # the only run of this phase
                        return

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.wait_for(all_open.wait(), 120)
        await asyncio.sleep(1)
        rss = rss_mb(pid)
        r = await pool.post(f"{API}/runs", json={"workflow": "quick@1", "start": True})
        run_ids.append(r.json()["id"])
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        expected = len((await pool.get(f"{API}/runs/{run_ids[0]}/events")).json())
        complete = sum(1 for n in received if n == expected)
        return max(rss, rss_mb(pid)), complete, expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    figures: list[Figure] = []
    with server() as (url, token, _data, pid):
        lat, floor = asyncio.run(_latency(url, token, args.runs))
        floor_p50 = percentile(floor, 50)
        figures.append(
            Figure("SSE event latency p50", percentile(lat, 50), "ms", "GET /healthz", floor_p50)
        )
        figures.append(
            Figure(
                "SSE event latency p99",
                percentile(lat, 99),
                "ms",
                "GET /healthz p99",
                percentile(floor, 99),
                goal="<= 20 ms",
            )
        )
        idle = rss_mb(pid)
        rss, complete, expected = asyncio.run(_many(url, token, args.clients, pid))
        print(f"  {complete}/{args.clients} clients received all {expected} events of the run")
        figures.append(
            Figure(
                f"RSS with {args.clients} SSE clients",
                rss,
                "MiB",
                "same server before",
                idle,
                goal="<= 300 MB",
            )
        )
        figures.append(
            Figure(
                f"clients that received every event (of {args.clients})",
                complete,
                "",
                "clients",
                args.clients,
            )
        )
    extra: dict[str, Any] = {"runs": args.runs, "clients": args.clients}
    report("events", figures, extra)


if __name__ == "__main__":
    main()
