"""The runs list's search and sort (the dashboard's runs page asks the same) with many
runs in the store, on SQLite and on PostgreSQL, beside the plain newest-first page of the
same run.

The rows are bulk-loaded as ``bench/queries.py`` loads them (100 users, the benchmark's
user owning a tenth).  Then over HTTP from a raw keep-alive socket, one request at a time,
pages of 50 of the user's runs from random cursors:

- baseline: ``GET /api/v1/runs?owner=bench&limit=50`` (newest first);
- ``search=noop`` (every run matches: text in the workflow reference);
- ``search=zzzz`` (no run matches: every row of the user is read);
- ``sort=state`` (the keyset order state, id).

    python -m bench.runs_list [--rows 100000] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from bench import rawhttp
from bench.common import Figure, percentile, pg_database, report
from bench.queries import load_postgres, load_sqlite
from bench.server import server

API = "/api/v1"
SAMPLES = 200


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def measure(backend: str, n: int) -> list[Figure]:
    label = f"{backend}, {n:,} runs"
    with (
        pg_database() if backend == "postgresql" else _nothing() as db_url,
        server(**({"database_url": db_url} if db_url else {})) as (url, token, data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        bench_id = c.get(f"{API}/auth/me").json()["id"]
        if backend == "sqlite":
            load_sqlite(str(data / "flowdeck.db"), n, bench_id)
        else:
            load_postgres(db_url, n, bench_id)
        mine = [r["id"] for r in c.get(f"{API}/runs", params={"limit": 500}).json()["items"]]
        cursors = [*mine[::7], None]
        raw = rawhttp.BlockingConnection(url, token)

        def page(query: str, full: bool) -> Callable[[], None]:
            def one() -> None:
                cursor = random.choice(cursors)
                r = raw.get(
                    f"{API}/runs?owner=bench&limit=50&{query}"
                    + (f"&cursor={cursor}" if cursor else "")
                )
                assert r.status == 200, r.body
                if full:
                    assert len(r.json()["items"]) == 50, r.body  # type: ignore[index]

            return one

        cases = {
            "newest first": page("sort=-created", True),
            "search=noop (all match)": page("search=noop", True),
            "search=zzzz (none match)": page("search=zzzz", False),
            "sort=state": page("sort=state", False),
        }
        for fn in cases.values():
            _timed(fn, 20)  # warm-up
        samples = {name: _timed(fn, SAMPLES) for name, fn in cases.items()}
        raw.close()
    base = samples.pop("newest first")
    figures = []
    for name, got in samples.items():
        for p in (50, 99):
            figures.append(
                Figure(
                    f"GET /runs {name} p{p} ({label})",
                    percentile(got, p),
                    "ms",
                    f"newest-first page p{p}",
                    percentile(base, p),
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    figures: list[Figure] = []
    for backend in backends:
        figures += measure(backend, args.rows)
    report("runs_list", figures, {"rows": args.rows, "backends": backends, "samples": SAMPLES})


if __name__ == "__main__":
    main()
