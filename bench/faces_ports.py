"""The SDK's stream-port reader and writer, beside plain httpx calls to the same routes in
the same run (what the SDK adds on top of HTTP):

- round trip: one record written with ``run.input(p).write`` and read back, transformed,
  from a following ``run.output(p).read()`` iterator (long poll), beside a raw POST and a
  raw long-poll GET;
- reading a closed output of many records: ``read()`` (long-poll pages) and
  ``read(sse=True)``, beside raw GET pages of 1000.

    python -m bench.faces_ports [--records 300] [--bulk 5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import httpx

from bench.common import Figure, median, report
from bench.ports import spec
from bench.server import server
from flowdeck.client import Client

API = "/api/v1"


def _sdk_round_trips(fd: Client, n: int) -> list[float]:
    run = fd.create_run("ports-bench@1", start=True)
    writer = run.input("records")
    reader = run.output("results").read(wait=10)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        writer.write([{"n": i}])
        record = next(reader)
        samples.append((time.perf_counter() - t0) * 1000)
        assert record.data["double"] == 2 * i
    writer.close()
    run.kill()
    return samples


def _raw_round_trips(c: httpx.Client, n: int) -> list[float]:
    run_id = c.post(f"{API}/runs", json={"workflow": "ports-bench@1", "start": True}).json()["id"]
    nxt = 0
    samples = []
    ndjson = {"content-type": "application/x-ndjson"}
    for i in range(n):
        t0 = time.perf_counter()
        c.post(f"{API}/runs/{run_id}/inputs/records", content=f'{{"n": {i}}}\n', headers=ndjson)
        while True:
            page = c.get(
                f"{API}/runs/{run_id}/outputs/results", params={"from": nxt, "wait": 10}
            ).json()
            if page["records"]:
                break
        nxt = page["next"]
        samples.append((time.perf_counter() - t0) * 1000)
    c.post(f"{API}/runs/{run_id}/kill")
    return samples


def _filled_run(fd: Client, bulk: int) -> str:
    run = fd.create_run("ports-bench@1", start=True)
    writer = run.input("records")
    for start in range(0, bulk, 1000):
        writer.write([{"n": i} for i in range(start, min(bulk, start + 1000))])
    writer.close()
    run.wait(timeout=300)
    return run.id


def _timed(fn: Callable[[], int]) -> float:
    """Records per second of ``fn`` (which returns how many it read)."""
    t0 = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--bulk", type=int, default=5000)
    args = parser.parse_args()
    with (
        server(stream_buffer_records="20000") as (url, token, _data, _pid),
        Client(url, token) as fd,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as raw,
    ):
        fd.request(
            "POST", f"{API}/workflows", content=spec(), headers={"content-type": "application/json"}
        )
        _sdk_round_trips(fd, 20)  # warm up
        sdk_rt = median(_sdk_round_trips(fd, args.records))
        raw_rt = median(_raw_round_trips(raw, args.records))
        run_id = _filled_run(fd, args.bulk)
        out = fd.run(run_id).output("results")

        def raw_pages() -> int:
            nxt, count = 0, 0
            while True:
                page = raw.get(
                    f"{API}/runs/{run_id}/outputs/results", params={"from": nxt, "limit": 1000}
                ).json()
                count += len(page["records"])
                nxt = page["next"]
                if page["closed"] and not page["records"]:
                    return count

        raw_rate = _timed(raw_pages)
        poll_rate = _timed(lambda: sum(1 for _ in out.read()))
        sse_rate = _timed(lambda: sum(1 for _ in out.read(sse=True)))
    report(
        "faces_ports",
        [
            Figure(
                "SDK write + read one record, p50",
                sdk_rt,
                "ms",
                "raw httpx POST + long-poll GET, p50",
                raw_rt,
            ),
            Figure(
                f"SDK read() of {args.bulk} records",
                poll_rate,
                "rec/s",
                "raw GET pages of 1000",
                raw_rate,
            ),
            Figure(
                f"SDK read(sse=True) of {args.bulk} records",
                sse_rate,
                "rec/s",
                "raw GET pages of 1000",
                raw_rate,
            ),
        ],
        {"records": args.records, "bulk": args.bulk},
    )


if __name__ == "__main__":
    main()
