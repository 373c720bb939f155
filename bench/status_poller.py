"""A client that polls one URL path in a loop, in a process of its own (so that the
benchmark's other work does not hold the GIL while it times a request): bench.wes's WES
status requests while runs execute.  Started by :func:`bench.wes.while_running` with the
``spawn`` method; it talks to its parent over a pipe."""

from __future__ import annotations

import time
from multiprocessing.connection import Connection

from bench import rawhttp


def poll(url: str, token: str, pipe: Connection, pause_s: float) -> None:
    """Say "ready", wait for a path, then GET it over one keep-alive connection,
    ``pause_s`` apart, until the parent sends anything; send back each request's wall
    time in ms (a request answered other than 200 stops it with an error)."""
    pipe.send("ready")
    path = pipe.recv()
    times: list[float] = []
    reconnects = 0
    conn = rawhttp.BlockingConnection(url, token)
    try:
        while not pipe.poll():
            t0 = time.perf_counter()
            try:
                r = conn.get(path)
            except OSError:  # the server closed the connection: a new one, not timed
                conn.close()
                conn = rawhttp.BlockingConnection(url, token)
                reconnects += 1
                continue
            times.append((time.perf_counter() - t0) * 1000)
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {r.body[:200]!r}")
            time.sleep(pause_s)
    finally:
        conn.close()
    pipe.recv()
    pipe.send({"ms": times, "reconnects": reconnects})
