"""The cost of SQLite's synchronous level: 1,000 single-step runs over HTTP (concurrency
16) with ``sqlite_synchronous`` NORMAL (the default) and FULL, in the same run.

    python -m bench.sqlite_sync [--runs 1000]
"""

from __future__ import annotations

import argparse
import asyncio

import httpx

from bench.common import Figure, report
from bench.runs import _load, push
from bench.server import server


def rate(level: str, runs: int) -> float:
    with server(sqlite_synchronous=level) as (url, token, _data, _pid):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            push(c, 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n')
        return runs / asyncio.run(_load(url, token, runs, 16))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    normal = rate("NORMAL", args.runs)
    full = rate("FULL", args.runs)
    figures = [
        Figure(
            "runs/s over HTTP, sqlite_synchronous=FULL",
            full,
            "runs/s",
            "the same with NORMAL (default)",
            normal,
        )
    ]
    report("sqlite_sync", figures, {"runs": args.runs})


if __name__ == "__main__":
    main()
