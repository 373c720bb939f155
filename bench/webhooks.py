"""Webhook benchmarks, each beside a baseline measured in the same run:

- deliveries per second: events written in batches of 100 (as the scheduler commits them)
  to a subscription, delivered, signed and recorded, to a local receiver in its own
  process (goal >= 300/s); baseline: the same number of plain httpx POSTs to the same
  receiver at the same concurrency;
- the outbox hook's cost: events written in batches with the hook installed but no
  subscription, beside the same writes without the hook.

    python -m bench.webhooks [--deliveries 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.common import Figure, report, scratch_dir
from flowdeck import clock
from flowdeck.config import load_settings
from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Run, RunState
from flowdeck.ids import new_id
from flowdeck.services.context import Context, build_context
from flowdeck.store.base import EventRow
from flowdeck.store.sql import SqlStore

RECEIVER = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
BATCH = 100
CONCURRENCY = 16


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def receiver() -> Iterator[str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    url = f"http://127.0.0.1:{port}/hook"
    try:
        for _ in range(300):
            try:
                httpx.post(url, content=b"{}")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def plain_posts(url: str, n: int, concurrency: int) -> float:
    """Seconds for n POSTs of a small JSON body, `concurrency` at a time."""
    body = b'{"type":"run.queued","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                r = await client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def context(tmp: Path, database_url: str | None, send: bool) -> Context:
    settings = load_settings(
        None,
        data_dir=tmp,
        database_url=database_url,
        webhook_allow_networks=["127.0.0.1/32"],
        webhook_concurrency=CONCURRENCY,
    )
    ctx = build_context(settings)
    if database_url:  # a shared database: start from empty webhook tables
        assert isinstance(ctx.store, SqlStore)
        with ctx.store.engine.begin() as conn:
            for table in ("webhook_attempts", "webhook_deliveries", "webhooks"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
    if send:
        ctx.start_webhooks()
    return ctx


def owner_and_run(ctx: Context) -> tuple[Actor, str]:
    now = clock.now()
    user = User(new_id("usr"), new_id("b")[-12:], Role.USER, AccountStatus.ACTIVE, "x", now, now)
    run = Run(new_id("run"), user.id, None, "bench/wf@1", RunState.RUNNING, now, now)
    with ctx.store.write() as tx:
        tx.add_user(user)
        tx.add_run(run)
    return Actor(user.id, user.username, user.role), run.id


def write_events(ctx: Context, run_id: str, n: int) -> float:
    """Seconds to write n events in transactions of BATCH."""
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        now = clock.now()
        rows: list[EventRow] = [
            ("run", run_id, "step.succeeded", now, None, {"step": f"s{i}"})
            for i in range(start, min(n, start + BATCH))
        ]
        with ctx.store.write() as tx:
            tx.add_events(rows)
    return time.perf_counter() - t0


def succeeded(ctx: Context) -> int:
    assert isinstance(ctx.store, SqlStore)
    with ctx.store.engine.connect() as conn:
        q = "SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'"
        return int(conn.execute(sa.text(q)).scalar_one())


def deliveries_per_second(url: str, n: int, database_url: str | None) -> float:
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        ctx = context(Path(tmp), database_url, send=True)
        try:
            actor, run_id = owner_and_run(ctx)
            ctx.webhooks.create(actor, url, ["step.*"], run_id)
            t0 = time.perf_counter()
            write_events(ctx, run_id, n)
            while succeeded(ctx) < n:
                time.sleep(0.01)
            return n / (time.perf_counter() - t0)
        finally:
            ctx.close()


def hook_cost(n: int, database_url: str | None) -> tuple[float, float]:
    """Seconds to write n events with the outbox hook (no subscriptions), and without."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        ctx = context(Path(tmp), database_url, send=False)
        try:
            _actor, run_id = owner_and_run(ctx)
            write_events(ctx, run_id, BATCH)  # warm up
            with_hook = min(write_events(ctx, run_id, n) for _ in range(3))
            hooks = list(ctx.store.event_hooks)
            ctx.store.event_hooks.clear()
            without = min(write_events(ctx, run_id, n) for _ in range(3))
            ctx.store.event_hooks.extend(hooks)
            return with_hook, without
        finally:
            ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--events", type=int, default=5000, help="for the hook's cost")
    parser.add_argument("--database-url", default=os.environ.get("FLOWDECK_BENCH_DB"))
    args = parser.parse_args()
    n = args.deliveries
    with receiver() as url:
        asyncio.run(plain_posts(url, 200, CONCURRENCY))  # warm up
        baseline = n / asyncio.run(plain_posts(url, n, CONCURRENCY))
        rate = deliveries_per_second(url, n, args.database_url)
    with_hook, without = hook_cost(args.events, args.database_url)
    report(
        "webhooks",
        [
            Figure(
                f"deliveries per second ({n}, concurrency {CONCURRENCY})",
                rate,
                "/s",
                "plain httpx POSTs",
                baseline,
                ">= 300/s",
            ),
            Figure(
                f"events written per second, hook, no subscription ({args.events})",
                args.events / with_hook,
                "/s",
                "without the hook",
                args.events / without,
                "ratio ~1",
            ),
        ],
        {"database": args.database_url or "sqlite"},
    )


if __name__ == "__main__":
    main()
