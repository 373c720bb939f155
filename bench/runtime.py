"""The scheduler and its committer alone: no HTTP, no step processes.

A real SQLite store (in the benchmark scratch directory), the real scheduler, committer and
group commit, and an executor that ends every step at once with exit code 0.  What is left
is flowdeck's own cost per run and per step, in CPU time of this process, which a busy
machine disturbs much less than wall-clock rates:

- single-step runs created at concurrency 16 (``Runs.create_async``, the path of
  ``POST /runs``) until all have finished: CPU per run;
- one run scattering a step over ``--fanout`` items: CPU per step.

The baseline is an empty write transaction, measured in the same run.

    python -m bench.runtime [--runs 2000] [--fanout 1000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import BACKEND_NAMES, Figure, database, report
from bench.inproc import ONE, scheduled
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.fake import FakeExecutor
from flowdeck.services.context import Context

FAN = (
    b'name: fan\nversion: "1"\ninputs:\n  n: {type: array, items: int}\n'
    b"steps:\n  t:\n    foreach: ${{ inputs.n }}\n    run: [/bin/true]\n"
)


def _succeed(_launch: Launch) -> Outcome:
    return Outcome(exit_code=0)


def _idle(ctx: Context) -> None:
    while True:
        with ctx.store.read() as tx:
            if tx.count_active_runs() == 0:
                return
        time.sleep(0.01)


def _empty_write_us(ctx: Context, n: int = 2000) -> float:
    t0 = time.process_time()
    for _ in range(n):
        with ctx.store.write():
            pass
    return (time.process_time() - t0) / n * 1e6


def measure(backend: str, args: argparse.Namespace) -> list[Figure]:
    """CPU per single-step run and per scatter step on ``backend``."""
    executor = FakeExecutor(auto=_succeed)
    with (
        database(backend) as db,
        scheduled(executor, 1, (ONE, FAN), **db) as (ctx, _scheduler, (actor,)),
    ):
        baseline = _empty_write_us(ctx)

        async def submit(n: int) -> None:
            gate = asyncio.Semaphore(16)

            async def one() -> None:
                async with gate:
                    await ctx.runs.create_async(actor, "one@1", start=True)

            await asyncio.gather(*(one() for _ in range(n)))

        asyncio.run(submit(50))  # warm-up
        _idle(ctx)
        c0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(submit(args.runs))
        _idle(ctx)
        per_run = (time.process_time() - c0) / args.runs * 1e6
        wall_runs = args.runs / (time.perf_counter() - t0)

        c0 = time.process_time()
        ctx.runs.create(actor, "fan@1", params={"n": list(range(args.fanout))}, start=True)
        _idle(ctx)
        per_step = (time.process_time() - c0) / args.fanout * 1e6
    name = BACKEND_NAMES[backend]
    print(f"  {name}: single-step runs, wall: {wall_runs:.0f} runs/s (no processes, no HTTP)")
    return [
        Figure(
            f"CPU per single-step run (no HTTP, no process), {name}",
            per_run,
            "us",
            "empty write transaction",
            baseline,
            goal="<= 300 us",
        ),
        Figure(
            f"CPU per step of a {args.fanout}-item scatter, {name}",
            per_step,
            "us",
            "empty write transaction",
            baseline,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    figures = [f for backend in backends for f in measure(backend, args)]
    report("runtime", figures, {"runs": args.runs, "fanout": args.fanout})


if __name__ == "__main__":
    main()
