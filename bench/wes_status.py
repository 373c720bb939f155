"""WES ``GET /runs/{id}/status`` of an ended run, idle (one request at a time over one
keep-alive connection): flowdeck beside wes-service's reference server, measured in the
same run.  Each server has run the same CWL workflow (tests/data/cwl/sort-count.cwl) once;
the figure is the p50 (and p99) of ``--requests`` status requests after a warm-up.  Goal
(the performance issue): flowdeck's p50 at most the fastest peer's.

    python -m bench.wes_status [--requests 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

from bench import rawhttp
from bench.common import Figure, percentile, report
from bench.server import server
from bench.wes import DONE, WES, run_request, submissions
from bench.wes_service import wes_service


def ended_run(url: str, token: str | None) -> str:
    """Submit the workflow once and wait for its end: the run's id."""
    run_id = submissions(url, run_request(url, token), 1, 1)[1][0]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=url, headers=headers) as c:
        while (state := c.get(f"{WES}/runs/{run_id}/status").json()["state"]) not in DONE:
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
    assert state == "COMPLETE", state
    return run_id


def status_ms(url: str, token: str, run_id: str, n: int) -> list[float]:
    """The wall times, in ms, of ``n`` status requests one after the other."""
    conn = rawhttp.BlockingConnection(url, token)
    path = f"{WES}/runs/{run_id}/status"
    try:
        for _ in range(max(50, n // 10)):  # warm-up
            assert conn.get(path).status == 200
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = conn.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status == 200, r.body
        return times
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    cwltool = str(Path(sys.executable).with_name("cwltool"))
    with server() as (url, token, _data, _pid):
        ours = status_ms(url, token, ended_run(url, token), args.requests)
    with wes_service(cwltool) as url:
        theirs = status_ms(url, "", ended_run(url, None), args.requests)
    figures = [
        Figure(
            f"WES status of an ended run, idle, p{p}",
            percentile(ours, p),
            "ms",
            "wes-service",
            percentile(theirs, p),
            goal="<= the fastest peer's" if p == 50 else "",
        )
        for p in (50, 99)
    ]
    report("wes_status", figures, {"requests": args.requests})


if __name__ == "__main__":
    main()
