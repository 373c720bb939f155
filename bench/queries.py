"""Status and list latency with many runs in the store, on SQLite and on PostgreSQL.

The rows are bulk-loaded straight into the database (not through the API): 100 users, the
benchmark's user owning a tenth of the runs, 90 % of them succeeded.  Then, over HTTP from
a raw keep-alive socket (``bench/rawhttp.py``: httpx's own CPU per request would count as
server latency), one request at a time:

- ``GET /api/v1/runs/{id}`` of random runs of the user: p50/p99 (goal p99 <= 10 ms);
- ``GET /api/v1/runs?owner=bench&state=succeeded&limit=50``, pages walked with the cursor
  from random points: p50/p99 (goal p99 <= 30 ms);

each beside the same SQL query run directly with the database driver (sqlite3, psycopg).

    python -m bench.queries [--rows 100000] [--million] [--backend sqlite|postgresql|both]

``--million`` adds the 1,000,000-row figures (minutes of loading: never in CI).
PostgreSQL: a fresh database on ``FLOWDECK_BENCH_PG`` (default the tests' server,
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), dropped afterwards.
"""

from __future__ import annotations

import argparse
import io
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import rawhttp
from bench.common import Figure, percentile, pg_database, report
from bench.server import server

API = "/api/v1"
USERS = 100
SAMPLES = 400
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

STATUS_SQL = "SELECT * FROM runs WHERE id = {p}"
LIST_SQL = (
    "SELECT * FROM runs WHERE owner_id = {p} AND state = {p} AND id < {p} ORDER BY id DESC LIMIT 50"
)


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def _state(i: int) -> str:
    r = i % 100
    return "succeeded" if r < 90 else "failed" if r < 95 else "cancelled" if r < 98 else "killed"


def rows(n: int, owners: list[str], bench_id: str) -> Iterator[tuple[Any, ...]]:
    """n runs, oldest first, ids ordered by time like flowdeck's."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        at = start + timedelta(milliseconds=i * 10)
        millis = int(at.timestamp() * 1000)
        run_id = f"run_{_b32(millis, 10)}{_b32(secrets.randbits(80), 16)}"
        owner = bench_id if i % 10 == 0 else owners[i % len(owners)]
        end = at + timedelta(seconds=1)
        yield (run_id, owner, "bench/noop@1", _state(i // 10), at, at, end, end)


COLUMNS = (
    "id",
    "owner_id",
    "workflow_ref",
    "state",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
)


def _sqlite_time(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def load_sqlite(path: str, n: int, bench_id: str) -> None:
    con = sqlite3.connect(path)
    owners = _users_sqlite(con)
    con.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    sql = (
        "INSERT INTO runs (id, owner_id, workflow_ref, state, created_at, queued_at, started_at,"
        " finished_at, state_since, params, resources, tags, priority, paused_s, fence)"
        " VALUES (?,?,?,?,?,?,?,?,?, '{}', '{}', '[]', 0, 0, 0)"
    )
    for r in rows(n, owners, bench_id):
        times = [_sqlite_time(v) for v in r[4:]]
        batch.append((*r[:4], *times, times[-1]))
        if len(batch) >= 50_000:
            con.executemany(sql, batch)
            batch.clear()
    con.executemany(sql, batch)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


def _users_sqlite(con: sqlite3.Connection) -> list[str]:
    now = _sqlite_time(datetime.now(UTC))
    ids = [f"usr_bench{i:05d}" for i in range(USERS - 1)]
    con.executemany(
        "INSERT INTO users (id, username, username_key, role, status, password_hash,"
        " created_at, updated_at) VALUES (?, ?, ?, 'user', 'active', 'x', ?, ?)",
        [(u, u, u, now, now) for u in ids],
    )
    con.commit()
    return ids


def load_postgres(url: str, n: int, bench_id: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as con:
        now = datetime.now(UTC)
        ids = [f"usr_bench{i:05d}" for i in range(USERS - 1)]
        with con.cursor() as cur:
            cur.executemany(
                "INSERT INTO users (id, username, username_key, role, status, password_hash,"
                " created_at, updated_at) VALUES (%s, %s, %s, 'user', 'active', 'x', %s, %s)",
                [(u, u, u, now, now) for u in ids],
            )
            copy_sql = (
                "COPY runs (id, owner_id, workflow_ref, state, created_at, queued_at,"
                " started_at, finished_at, state_since, params, resources, tags, priority,"
                " paused_s, fence) FROM STDIN"
            )
            with cur.copy(copy_sql) as copy:
                buf = io.StringIO()
                for k, r in enumerate(rows(n, ids, bench_id)):
                    t = [v.isoformat() for v in r[4:]]
                    buf.write("\t".join([*r[:4], *t, t[-1], "{}", "{}", "[]", "0", "0", "0"]))
                    buf.write("\n")
                    if k % 50_000 == 49_999:
                        copy.write(buf.getvalue())
                        buf = io.StringIO()
                copy.write(buf.getvalue())
            cur.execute("ANALYZE runs")


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def direct(backend: str, url: str) -> tuple[Callable[[str], Any], Callable[[str, str], Any]]:
    """(status query, list query) run with the driver itself, no flowdeck in between."""
    if backend == "sqlite":
        con = sqlite3.connect(url.removeprefix("sqlite:///"), check_same_thread=False)
        status_sql, list_sql = STATUS_SQL.format(p="?"), LIST_SQL.format(p="?")

        def status(run_id: str) -> Any:
            return con.execute(status_sql, (run_id,)).fetchall()

        def page(owner: str, before: str) -> Any:
            return con.execute(list_sql, (owner, "succeeded", before)).fetchall()

        return status, page
    import psycopg

    pcon = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
    status_sql, list_sql = STATUS_SQL.format(p="%s"), LIST_SQL.format(p="%s")

    def pstatus(run_id: str) -> Any:
        return pcon.execute(status_sql, (run_id,), prepare=True).fetchall()

    def ppage(owner: str, before: str) -> Any:
        return pcon.execute(list_sql, (owner, "succeeded", before), prepare=True).fetchall()

    return pstatus, ppage


def measure(backend: str, n: int) -> list[Figure]:
    label = f"{backend}, {n:,} runs"
    with (
        pg_database() if backend == "postgresql" else _nothing() as db_url,
        server(**({"database_url": db_url} if db_url else {})) as (url, token, data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        me = c.get(f"{API}/auth/me").json()
        bench_id = me["id"]
        t0 = time.perf_counter()
        if backend == "sqlite":
            db_url = f"sqlite:///{data / 'flowdeck.db'}"
            load_sqlite(str(data / "flowdeck.db"), n, bench_id)
        else:
            load_postgres(db_url, n, bench_id)
        print(f"  {label}: loaded in {time.perf_counter() - t0:.0f} s")
        mine = [r["id"] for r in c.get(f"{API}/runs", params={"limit": 500}).json()["items"]]
        page = c.get(f"{API}/runs", params={"limit": 500, "cursor": mine[-1]}).json()["items"]
        mine += [r["id"] for r in page]
        cursors = [*mine[::7], None]
        direct_status, direct_page = direct(backend, db_url)

        # Requests from a raw keep-alive socket: httpx costs 1 to 7 ms of CPU per request
        # here, which would be counted in the server's latency.
        raw = rawhttp.BlockingConnection(url, token)

        def api_status() -> None:
            r = raw.get(f"{API}/runs/{random.choice(mine)}")
            assert r.status == 200, r.body

        def api_list() -> None:
            cursor = random.choice(cursors)
            query = "owner=bench&state=succeeded&limit=50" + (f"&cursor={cursor}" if cursor else "")
            r = raw.get(f"{API}/runs?{query}")
            assert r.status == 200, r.body
            assert len(r.json()["items"]) == 50, r.body  # type: ignore[index]

        _timed(api_status, 50)  # warm-up
        _timed(api_list, 50)
        status = _timed(api_status, SAMPLES)
        listing = _timed(api_list, SAMPLES)
        base_status = _timed(lambda: direct_status(random.choice(mine)), SAMPLES)
        base_list = _timed(lambda: direct_page(bench_id, random.choice(mine[::7])), SAMPLES)
        raw.close()
    figures = []
    for what, samples, base, goal in (
        ("GET /runs/{id}", status, base_status, "<= 10 ms"),
        ("GET /runs (50, owner+state)", listing, base_list, "<= 30 ms"),
    ):
        for p in (50, 99):
            figures.append(
                Figure(
                    f"{what} p{p} ({label})",
                    percentile(samples, p),
                    "ms",
                    f"same SQL direct p{p}",
                    percentile(base, p),
                    goal=goal if p == 99 else "",
                )
            )
    return figures


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also 1,000,000 runs")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    sizes = [args.rows] + ([1_000_000] if args.million and args.rows != 1_000_000 else [])
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    figures: list[Figure] = []
    for n in sizes:
        for backend in backends:
            figures += measure(backend, n)
    report("queries", figures, {"sizes": sizes, "backends": backends, "samples": SAMPLES})


if __name__ == "__main__":
    main()
