"""Fair-share admission: scheduler CPU per admitted run with one user, against forty.

A real SQLite store, the real scheduler and committer, and an executor that ends every
step at once.  ``--runs`` single-step runs are queued while the scheduler holds back
(``draining``), spread over one user, then over ``--users`` users (round robin); then the
scheduler admits them all, ``slots`` at a time, choosing each by fair share among the
users with queued runs.  The figure is this process's CPU time from the release until
every run ended, per run; the baseline is the same with one user, in the same run (with
one user fair share has one candidate, as before it existed).

    python -m bench.fairshare [--runs 2000] [--users 40]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import Figure, report
from bench.inproc import scheduled
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.fake import FakeExecutor
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.services.context import Context


def _succeed(_launch: Launch) -> Outcome:
    return Outcome(exit_code=0)


def _idle(ctx: Context) -> None:
    while True:
        with ctx.store.read() as tx:
            if tx.count_active_runs() == 0:
                return
        time.sleep(0.01)


def _hold(scheduler: Scheduler, held: bool) -> None:
    def change() -> None:
        scheduler.draining = held
        scheduler._plan()

    scheduler.call(change)


def _measure(users: int, runs: int, slots: int) -> float:
    """CPU microseconds per run admitted and ended, with ``runs`` queued over ``users``."""
    executor = FakeExecutor(auto=_succeed)
    with scheduled(executor, users, slots=slots) as (ctx, scheduler, actors):

        async def submit(n: int) -> None:
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    await ctx.runs.create_async(actors[i % users], "one@1", start=True)

            await asyncio.gather(*(one(i) for i in range(n)))

        asyncio.run(submit(20))  # warm-up
        _idle(ctx)
        _hold(scheduler, True)
        asyncio.run(submit(runs))
        # every run handed over to the scheduler (its loop takes them in order, before
        # this call; it holds at most a window of each user's, the rest in the store)
        scheduler.call(lambda: None)
        c0 = time.process_time()
        _hold(scheduler, False)
        _idle(ctx)
        return (time.process_time() - c0) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    one = _measure(1, args.runs, args.slots)
    many = _measure(args.users, args.runs, args.slots)
    figures = [
        Figure(
            f"CPU per admitted run, {args.users} users",
            many,
            "us",
            "1 user",
            one,
            goal="ratio near 1",
        )
    ]
    report("fairshare", figures, {"runs": args.runs, "users": args.users, "slots": args.slots})


if __name__ == "__main__":
    main()
