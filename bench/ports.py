"""Stream ports round trip (the events issue's goal): one record pushed into a stream input
and read back, transformed, from the stream output — through the server, a real step
process reading JSON lines on stdin and writing JSON lines on stdout, and the database —
beside the same step script driven through a plain pipe, measured in the same run.

- HTTP: POST the record, then a long poll (`wait=`) for it on the output (goal p50 <= 10 ms),
  also beside two plain authenticated GETs of the run (the HTTP floor of the moment);
- WebSocket: send it on the input socket, receive it on the output socket.

    python -m bench.ports [--records 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import httpx
from websockets.sync.client import connect

from bench.common import Figure, percentile, report
from bench.server import server

API = "/api/v1"
STEP = (
    "import json, sys\n"
    "for line in sys.stdin:\n"
    "    r = json.loads(line)\n"
    "    print(json.dumps({'n': r['n'], 'double': r['n'] * 2}), flush=True)\n"
)
WARMUP = 20


def spec() -> str:
    return json.dumps(
        {
            "name": "ports-bench",
            "version": "1",
            "inputs": {"records": {"type": "stream"}},
            "outputs": {"results": {"from": "${{ steps.t.outputs.out }}"}},
            "steps": {
                "t": {
                    "run": [sys.executable, "-u", "-c", STEP],
                    "stdin": "${{ inputs.records }}",
                    "outputs": {"out": {"stdout": "stream"}},
                }
            },
        }
    )


def pipe_baseline(n: int) -> list[float]:
    """Microseconds per record through the same script on a plain pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", STEP], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    samples = []
    for i in range(n + WARMUP):
        t0 = time.perf_counter()
        proc.stdin.write(json.dumps({"n": i}).encode() + b"\n")
        proc.stdin.flush()
        out = json.loads(proc.stdout.readline())
        assert out["double"] == 2 * i
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    proc.stdin.close()
    proc.wait()
    return samples


def start_run(c: httpx.Client) -> str:
    r = c.post(f"{API}/runs", json={"workflow": "ports-bench@1", "start": True})
    r.raise_for_status()
    return str(r.json()["id"])


def http_round_trips(c: httpx.Client, n: int) -> list[float]:
    run_id = start_run(c)
    samples = []
    for i in range(n + WARMUP):
        t0 = time.perf_counter()
        c.post(f"{API}/runs/{run_id}/inputs/records", json=[{"n": i}]).raise_for_status()
        page = c.get(f"{API}/runs/{run_id}/outputs/results", params={"from": i, "wait": 30}).json()
        assert page["records"][0]["data"]["double"] == 2 * i, page
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    c.post(f"{API}/runs/{run_id}/inputs/records/close").raise_for_status()
    return samples


def ws_round_trips(url: str, token: str, c: httpx.Client, n: int) -> list[float]:
    run_id = start_run(c)
    base = url.replace("http://", "ws://") + f"{API}/runs/{run_id}"
    auth = {"Authorization": f"Bearer {token}"}
    samples = []
    with (
        connect(f"{base}/inputs/records", additional_headers=auth) as push,
        connect(f"{base}/outputs/results", additional_headers=auth) as read,
    ):
        for i in range(n + WARMUP):
            t0 = time.perf_counter()
            push.send(json.dumps({"n": i}))
            record = json.loads(read.recv(timeout=30))
            assert record["data"]["double"] == 2 * i, record
            if i >= WARMUP:
                samples.append((time.perf_counter() - t0) * 1e6)
            push.recv(timeout=30)  # the push's acknowledgement
    c.post(f"{API}/runs/{run_id}/inputs/records/close").raise_for_status()
    return samples


def http_floor(c: httpx.Client, n: int) -> list[float]:
    """Microseconds of two authenticated requests that touch the database (the run's
    status, twice): what any push-then-read over HTTP costs on this machine now."""
    run_id = start_run(c)
    samples = []
    for i in range(n + WARMUP):
        t0 = time.perf_counter()
        c.get(f"{API}/runs/{run_id}").raise_for_status()
        c.get(f"{API}/runs/{run_id}").raise_for_status()
        if i >= WARMUP:
            samples.append((time.perf_counter() - t0) * 1e6)
    c.post(f"{API}/runs/{run_id}/inputs/records/close").raise_for_status()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=500)
    args = parser.parse_args()
    n = args.records
    base = pipe_baseline(n)
    with (
        server() as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        c.post(
            f"{API}/workflows", content=spec(), headers={"content-type": "application/json"}
        ).raise_for_status()
        floor = http_floor(c, n)
        http = http_round_trips(c, n)
        ws = ws_round_trips(url, token, c, n)
    pipe50, pipe99 = percentile(base, 50), percentile(base, 99)
    figures = [
        Figure("round trip over HTTP, p50", percentile(http, 50), "µs", "pipe", pipe50, "<= 10000"),
        Figure("round trip over HTTP, p99", percentile(http, 99), "µs", "pipe", pipe99),
        Figure(
            "round trip over HTTP, p50",
            percentile(http, 50),
            "µs",
            "two GET /runs/{id}",
            percentile(floor, 50),
        ),
        Figure("round trip over WebSockets, p50", percentile(ws, 50), "µs", "pipe", pipe50),
        Figure("round trip over WebSockets, p99", percentile(ws, 99), "µs", "pipe", pipe99),
    ]
    report("ports", figures, {"records": n})


if __name__ == "__main__":
    main()
