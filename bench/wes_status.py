"""WES ``GET /runs/{id}/status`` of an ended run, idle (one request at a time over one
keep-alive connection): flowdeck beside the WES peers of bench.wes (wes-service's reference
server, and Sapporo where it can be installed and started: bench.sapporo), measured in the
same run.  Each server has run the same CWL workflow (tests/data/cwl/sort-count.cwl) once;
the figures are the p50 and p99 of ``--requests`` status requests after a warm-up.  Goal
(the performance issue): flowdeck's p50 at most the fastest peer's (that figure's baseline);
then flowdeck's p50 and p99 beside each peer's.

    python -m bench.wes_status [--requests 2000] [--skip sapporo]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import httpx

from bench import rawhttp
from bench.common import Figure, percentile, report
from bench.server import server
from bench.venvs import PeerUnavailable
from bench.wes import WES, run_request, submissions, wait_all, wes_peers


def ended_run(url: str, token: str | None, form: Mapping[str, str] | None = None) -> str:
    """Submit the workflow once and wait for its end (COMPLETE): the run's id."""
    run_id = submissions(url, run_request(url, token, form), 1, 1)[1][0]
    wait_all(url, token, [run_id], limit_s=300)
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
    parser.add_argument("--skip", nargs="*", default=[], choices=["sapporo"])
    args = parser.parse_args()
    with server() as (url, token, _data, _pid):
        ours = status_ms(url, token, ended_run(url, token), args.requests)
    theirs: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for peer in wes_peers(tuple(args.skip)):
        try:
            with peer.start() as url:
                theirs[peer.name] = status_ms(
                    url, "", ended_run(url, None, peer.form), args.requests
                )
                labels[peer.name] = peer.label
        except (PeerUnavailable, RuntimeError, OSError, httpx.HTTPError) as exc:
            print(f"  {peer.name}: not measured: {type(exc).__name__}: {exc}", flush=True)
    figures = []
    if theirs:
        fastest = min(theirs, key=lambda name: percentile(theirs[name], 50))
        figures.append(
            Figure(
                "WES status of an ended run, idle, p50",
                percentile(ours, 50),
                "ms",
                f"the fastest peer: {labels[fastest]}",
                percentile(theirs[fastest], 50),
                goal="<= the fastest peer's",
            )
        )
    for name, times in theirs.items():
        figures += [
            Figure(
                f"WES status of an ended run, idle, p{p}, beside {name}",
                percentile(ours, p),
                "ms",
                labels[name],
                percentile(times, p),
            )
            for p in (50, 99)
        ]
    measured = {"flowdeck": ours, **theirs}
    report(
        "wes_status",
        figures,
        {
            "requests": args.requests,
            "ms": {
                name: {"p50": percentile(t, 50), "p99": percentile(t, 99)}
                for name, t in measured.items()
            },
        },
    )


if __name__ == "__main__":
    main()
