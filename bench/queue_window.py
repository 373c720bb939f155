"""Scheduler memory against queue depth: the window of queued runs it holds.

A real SQLite store and the real scheduler, with an executor whose steps never end: a
first run holds the only slot, then ``--runs`` single-step runs are submitted (through the
run service, as the API does) over ``--users`` users, round robin, into that full queue.
The figure is the memory the process allocated meanwhile (tracemalloc, after a garbage
collection) per queued run, and the runs the scheduler holds, with the default
``scheduler_window``; the baseline is the same with a window larger than the queue (every
queued run held, as before the window existed), in the same run.

    python -m bench.queue_window [--runs 20000] [--users 2]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from bench.common import Figure, report
from bench.inproc import scheduled
from flowdeck.config import Settings
from flowdeck.domain.runs import RunState
from flowdeck.executors.fake import FakeExecutor


def _measure(window: int, runs: int, users: int) -> tuple[float, int]:
    """Bytes allocated per queued run, and the runs held, with ``window``."""
    executor = FakeExecutor()  # its steps never end: the slot stays taken
    with scheduled(executor, users, slots=1, scheduler_window=window) as (ctx, scheduler, actors):
        busy = ctx.runs.create(actors[0], "one@1", start=True).id
        while busy not in scheduler.call(lambda: set(scheduler.active)):
            time.sleep(0.01)
        for i in range(200):  # warm-up: caches, the committer's first batches
            ctx.runs.create(actors[i % users], "one@1", start=True)
        scheduler.call(lambda: None)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(runs):
            ctx.runs.create(actors[i % users], "one@1", start=True)
        held = scheduler.call(lambda: len(scheduler.queued))  # all handed over
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        with ctx.store.read() as tx:
            queued = tx.count_runs_in([RunState.QUEUED])[RunState.QUEUED]
        assert queued == runs + 200, queued
        return (after - before) / runs, held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2)
    args = parser.parse_args()
    default = Settings.model_fields["scheduler_window"].default
    unbounded, held_all = _measure(10 * (args.runs + 200), args.runs, args.users)
    windowed, held = _measure(default, args.runs, args.users)
    print(f"  runs held: {held} (window {default}), {held_all} (unbounded)")
    figures = [
        Figure(
            f"memory per queued run, {args.runs} queued",
            windowed,
            "B",
            "every queued run held",
            unbounded,
            goal="flat in queue depth",
        ),
        Figure(
            f"queued runs held, {args.runs} queued over {args.users} users",
            held,
            "runs",
            "every queued run held",
            held_all,
        ),
    ]
    report("queue_window", figures)


if __name__ == "__main__":
    main()
