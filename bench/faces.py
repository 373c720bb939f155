"""The faces' benchmarks:

- how soon ``Run.wait`` (the SDK, following the run's event stream) returns after a run
  ends, beside a client that polls the run's status every 0.5 s;
- the time to render the dashboard's runs page (100 rows), beside the API's JSON list of
  the same runs.

    python -m bench.faces [--runs 30]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import httpx

from bench.common import Figure, median, percentile, report
from bench.server import PASSWORD, server
from flowdeck.client import Client

QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'
POLL_S = 0.5


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _wait_latency(fd: Client, runs: int) -> list[float]:
    lat = []
    for _ in range(runs):
        run = fd.create_run("quick@1", start=True)
        final = run.wait(timeout=60)
        lat.append((time.time() - _ts(final["finished_at"])) * 1000)
    return lat


def _poll_latency(fd: Client, runs: int) -> list[float]:
    lat = []
    for _ in range(runs):
        run = fd.create_run("quick@1", start=True)
        while not run.done:
            time.sleep(POLL_S)
            run.status()
        lat.append((time.time() - _ts(run.data["finished_at"])) * 1000)
    return lat


def _page_times(url: str, cookies: httpx.Cookies, token: str, n: int) -> tuple[float, float]:
    page, api = [], []
    bearer = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=url, cookies=cookies, timeout=60) as browser,
        httpx.Client(base_url=url, headers=bearer, timeout=60) as c,
    ):
        for _ in range(n):
            t0 = time.perf_counter()
            browser.get("/").raise_for_status()
            page.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            c.get("/api/v1/runs", params={"limit": 100}).raise_for_status()
            api.append((time.perf_counter() - t0) * 1000)
    return median(page), median(api)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with server() as (url, token, _data, _pid), Client(url, token) as fd:
        fd.request(
            "POST", "/api/v1/workflows", content=QUICK, headers={"content-type": "text/yaml"}
        )
        streamed = _wait_latency(fd, args.runs)
        polled = _poll_latency(fd, args.runs)
        for _ in range(max(0, 100 - 2 * args.runs)):
            fd.create_run("quick@1")
        login = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"username": "bench", "password": PASSWORD, "cookie": True},
        )
        page_ms, api_ms = _page_times(url, login.cookies, token, 50)
    report(
        "faces",
        [
            Figure(
                "Run.wait returns after the run ends, p50",
                median(streamed),
                "ms",
                f"polling every {POLL_S} s, p50",
                median(polled),
            ),
            Figure(
                "Run.wait returns after the run ends, p99",
                percentile(streamed, 99),
                "ms",
                f"polling every {POLL_S} s, p99",
                percentile(polled, 99),
            ),
            Figure(
                "dashboard runs page (100 rows), median",
                page_ms,
                "ms",
                "GET /api/v1/runs?limit=100 (JSON)",
                api_ms,
            ),
        ],
        {"runs": args.runs},
    )


if __name__ == "__main__":
    main()
