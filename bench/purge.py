"""Retention's purge and the scheduler: does a store full of ended runs awaiting purge,
or a purge under way, slow the scheduler down?

A real SQLite store (in the benchmark scratch directory), the real scheduler, committer and
group commit, and an executor that ends every step at once (as ``bench.runtime``).  Runs
are single-step runs created at concurrency 16 until all have finished:

- CPU per run with ``--ended`` ended runs (and two events each) awaiting purge, made by
  direct inserts, against the same with none: the baseline, measured in the same run;
- single-step runs per second (wall) while the purge deletes them in its batches, against
  the rate with no purge;
- the purge's throughput: ended runs (with their events) deleted per second.

    python -m bench.purge [--ended 100000] [--runs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import Figure, report, scratch_dir
from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.workflows import Visibility
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.fake import FakeExecutor
from flowdeck.ids import new_id
from flowdeck.runtime.ports import PortRuntime
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.services.context import Context, build_context
from flowdeck.store import schema as t

ONE = b'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'
CHUNK = 5000


def _succeed(_launch: Launch) -> Outcome:
    return Outcome(exit_code=0)


def _idle(ctx: Context) -> None:
    while True:
        with ctx.store.read() as tx:
            if tx.count_active_runs() == 0:
                return
        time.sleep(0.01)


def _insert_ended(ctx: Context, owner_id: str, n: int) -> None:
    """``n`` runs that ended 60 days ago, two events each, by direct inserts."""
    ended = clock.now() - timedelta(days=60)
    for start in range(0, n, CHUNK):
        runs = [
            Run(
                id=new_id("run"),
                owner_id=owner_id,
                workflow_id=None,
                workflow_ref="bench/one@1",
                state=RunState.SUCCEEDED,
                created_at=ended,
                state_since=ended,
                finished_at=ended,
            )
            for _ in range(min(CHUNK, n - start))
        ]
        events: list[dict[str, Any]] = [
            {
                "subject_kind": "run",
                "subject_id": run.id,
                "seq": seq,
                "type": kind,
                "at": ended,
                "actor": None,
                "data": {},
                "owner_id": owner_id,
            }
            for run in runs
            for seq, kind in ((1, "run.created"), (2, "run.succeeded"))
        ]
        with ctx.store.write() as tx:
            tx.add_runs(runs)
            tx.conn.execute(t.events.insert(), events)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ended", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data", registration="open", retention_runs_days=30
        )
        ctx = build_context(settings)
        user = ctx.accounts.register("bench", "timing passphrase 1234")
        actor = Actor(user.id, user.username, user.role)
        ctx.workflows.push_spec(actor, ONE, Visibility.PRIVATE)
        scheduler = Scheduler(
            ctx.store,
            settings,
            {"local": FakeExecutor(auto=_succeed)},
            lambda wid: ctx.workflows.root / wid,
            ports=PortRuntime(ctx.store, ctx.ports.hub),
        )
        scheduler.start()
        ctx.runs.scheduler = scheduler

        def batch() -> tuple[float, float]:
            """CPU per run (us) and runs per second (wall) of ``--runs`` runs."""

            async def submit() -> None:
                gate = asyncio.Semaphore(16)

                async def one() -> None:
                    async with gate:
                        await ctx.runs.create_async(actor, "one@1", start=True)

                await asyncio.gather(*(one() for _ in range(args.runs)))

            c0, t0 = time.process_time(), time.perf_counter()
            asyncio.run(submit())
            _idle(ctx)
            return (
                (time.process_time() - c0) / args.runs * 1e6,
                args.runs / (time.perf_counter() - t0),
            )

        try:
            batch()  # warm-up
            cpu_none, wall_none = batch()
            t0 = time.perf_counter()
            _insert_ended(ctx, user.id, args.ended)
            print(f"  {args.ended} ended runs inserted in {time.perf_counter() - t0:.1f} s")
            cpu_full, _ = batch()
            # the purge in its thread, runs submitted meanwhile
            result: dict[str, float] = {}

            def purge() -> None:
                p0 = time.perf_counter()
                report_ = ctx.retention.purge()
                assert report_ is not None
                result["deleted"] = report_.runs
                result["seconds"] = time.perf_counter() - p0

            purger = threading.Thread(target=purge)
            purger.start()
            _, wall_purging = batch()
            purger.join()
            print(
                f"  purge: {result['deleted']:.0f} runs in {result['seconds']:.1f} s "
                f"(batches of {settings.retention_batch})"
            )
        finally:
            ctx.close()
    figures = [
        Figure(
            f"CPU per single-step run, {args.ended} ended runs awaiting purge",
            cpu_full,
            "us",
            "none awaiting",
            cpu_none,
        ),
        Figure(
            "single-step runs per second during a purge", wall_purging, "/s", "no purge", wall_none
        ),
        Figure(
            "purge: ended runs (2 events each) deleted per second",
            result["deleted"] / result["seconds"],
            "/s",
            "runs per second, no purge",
            wall_none,
        ),
    ]
    report("purge", figures, {"ended": args.ended, "runs": args.runs})


if __name__ == "__main__":
    main()
