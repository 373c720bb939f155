"""Run submissions per second over HTTP, and the memory of an idle server.

- ``POST /api/v1/runs {"workflow": ..., "start": true}`` (create and queue in one call) by a
  load generator at concurrency 16, not waiting for the runs to finish (goal >= 0.35x
  ``GET /healthz`` over the same connections), twice: while the scheduler runs them at once
  (it shares the server's interpreter), and into a full queue (a run of long sleeps holds
  every slot, as in a burst on a busy machine); the baseline is the same load generator
  against ``GET /healthz`` (a bare route) on the same server, so the ratio is the cost of a
  submission over the HTTP floor;
- resident memory of the idle server after start-up and one request (goal <= 150 MB),
  beside a bare uvicorn serving a one-line ASGI app.

    python -m bench.submit [--seconds 5] [--concurrency 16] [--rounds 3]
        [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx

from bench.common import BACKEND_NAMES, Figure, database, median, report
from bench.loadgen import generator, rate
from bench.server import _port, rss_mb, server

API = "/api/v1"

BARE_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def bare_uvicorn_rss() -> float:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


NOOP = 'name: noop\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


def _push(c: httpx.Client, text: str) -> None:
    c.post(
        f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
    ).raise_for_status()


def _busy(c: httpx.Client) -> None:
    """Hold every slot of the server with a run of long sleeps, so that what is submitted
    next waits in the queue."""
    slots = os.cpu_count() or 1
    steps = "".join(f"  s{i}: {{run: [sleep, '600']}}\n" for i in range(slots))
    _push(c, f'name: busy\nversion: "1"\nsteps:\n{steps}')
    run_id = c.post(f"{API}/runs", json={"workflow": "busy@1", "start": True}).json()["id"]
    for _ in range(100):
        if c.get(f"{API}/runs/{run_id}").json()["steps"].get("running") == slots:
            return
        time.sleep(0.05)
    raise RuntimeError("the busy run did not take every slot")


def _rounds(url: str, token: str, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """(submissions/s, GET /healthz/s) per round."""
    body = {"workflow": "noop@1", "start": True}
    kw = {"concurrency": args.concurrency, "seconds": args.seconds}
    rate(url, token, "POST", f"{API}/runs", body, concurrency=args.concurrency, seconds=1)
    subs: list[float] = []
    bases: list[float] = []
    for _ in range(args.rounds):
        bases.append(rate(url, token, "GET", "/healthz", **kw))  # type: ignore[arg-type]
        subs.append(rate(url, token, "POST", f"{API}/runs", body, **kw))  # type: ignore[arg-type]
    return subs, bases


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    figures: list[Figure] = []
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    cases = (
        # The scheduler runs the submitted runs meanwhile, in the same process.
        ("run submissions, run at once (c={c}), {db}", False),
        # Every slot is busy: the runs queue up, as in a burst on a full machine.
        ("run submissions into a full queue (c={c}), {db}", True),
    )
    for backend in backends:
        for name, full in cases:
            with (
                database(backend) as db,
                server(**db) as (url, token, _data, pid),
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
            ):
                if not full and backend == "sqlite":
                    idle = rss_mb(pid)
                    bare = bare_uvicorn_rss()
                    figures.append(
                        Figure(
                            "RSS of an idle server",
                            idle,
                            "MiB",
                            "bare uvicorn",
                            bare,
                            goal="<= 150 MB",
                        )
                    )
                _push(c, NOOP)
                if full:
                    _busy(c)
                subs, bases = _rounds(url, token, args)
            label = name.format(c=args.concurrency, db=BACKEND_NAMES[backend])
            print(f"  {label}: per round {', '.join(f'{s:.0f}' for s in subs)}/s")
            print(f"  GET /healthz/s per round: {', '.join(f'{b:.0f}' for b in bases)}")
            figures.append(
                Figure(
                    label,
                    median(subs),
                    "runs/s",
                    "GET /healthz req/s",
                    median(bases),
                    goal=">= 0.35x GET /healthz",
                )
            )
    print(f"  load generator: {generator()}")
    report(
        "submit",
        figures,
        {"seconds": args.seconds, "concurrency": args.concurrency, "generator": generator()},
    )


if __name__ == "__main__":
    main()
