"""The crash harness: a real server process killed with SIGKILL at random moments (seeded)
while runs of varied shapes go on, restarted each time; then every run must end as it would
have without crashes, no step execution may have overlapped another of the same step, each
run's events must be gapless and end with its state, every product must match its record,
every webhook event must have arrived, and no process of any run may be left."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import STRONG, free_port
from tests.receiver import Receiver, receiver

API = "/api/v1"
# Two seeds by default: 4 found a stream step whose input a crash cut short taken as done.
SEEDS = (
    [int(os.environ["FLOWDECK_TEST_CRASH_SEED"])]
    if "FLOWDECK_TEST_CRASH_SEED" in os.environ
    else [20261122, 4]
)
KILLS = 5
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}


def guarded(counters: Path, seconds: float, then: str = "true") -> str:
    """A step body that counts its executions and records any overlap with another
    execution of the same step (a lock held while it runs; SIGKILL releases it)."""
    key = "$FLOWDECK_RUN_ID.$FLOWDECK_STEP.${FLOWDECK_INDEX:-x}"
    return (
        f"exec 9>>{counters}/{key}.lock; "
        f"flock -n 9 || echo {key} >> {counters}/overlaps; "
        f"echo $FLOWDECK_ATTEMPT >> {counters}/{key}.runs; sleep {seconds}; {then}"
    )


def specs(counters: Path) -> dict[str, tuple[str, str]]:
    """name -> (workflow text, the state its runs must end in)."""

    def step(seconds: float, then: str = "true") -> str:
        return json.dumps(["sh", "-c", guarded(counters, seconds, then)])

    chain = (
        'name: chain\nversion: "1"\nsteps:\n'
        f"  a: {{run: {step(0.4, 'echo a > out')}, outputs: {{f: {{path: out}}}}}}\n"
        f"  b: {{run: {step(0.4, 'cat ../a/out > out; echo b >> out')}, needs: [a],"
        " outputs: {f: {path: out}}}\n"
        f"  c: {{run: {step(0.4, 'cat ../b/out > out; echo c >> out')}, needs: [b],"
        " outputs: {f: {path: out}}}\n"
    )
    fanout = (
        'name: fanout\nversion: "1"\ninputs:\n  n: {type: array, items: int, default: [1,2,3,4]}\n'
        "steps:\n  t:\n    foreach: ${{ inputs.n }}\n"
        f"    run: {step(0.3, 'echo $FLOWDECK_INDEX > out')}\n"
        "    outputs: {f: {path: out}}\n"
        f"  join: {{run: {step(0.1)}, needs: [t]}}\n"
    )
    long = f'name: long\nversion: "1"\nsteps:\n  s: {{run: {step(2.5)}}}\n'
    fails = (
        'name: fails\nversion: "1"\nsteps:\n'
        f"  s: {{run: {step(0.2, 'exit 3')}, retries: {{count: 1, backoff: 0.1}}}}\n"
    )
    flaky = (
        'name: flaky\nversion: "1"\nsteps:\n'
        f"  s: {{run: {step(0.2, '[ $FLOWDECK_ATTEMPT -ge 2 ]')},"
        " retries: {count: 5, backoff: 0.1}}\n"
    )
    double = json.dumps(
        [
            "python3",
            "-u",
            "-c",
            "import json, sys\nfor line in sys.stdin:\n"
            "    print(json.dumps({'n': 2 * json.loads(line)['n']}), flush=True)\n",
        ]
    )
    stream = (
        'name: stream\nversion: "1"\ninputs:\n  records: {type: stream}\n'
        'outputs:\n  results: {from: "${{ steps.double.outputs.out }}"}\n'
        f"steps:\n  double:\n    run: {double}\n"
        "    stdin: ${{ inputs.records }}\n"
        "    retries: {count: 10, backoff: 0.1}\n"
        "    outputs:\n      out: {stdout: stream}\n"
    )
    return {
        "chain": (chain, "succeeded"),
        "fanout": (fanout, "succeeded"),
        "long": (long, "succeeded"),
        "fails": (fails, "failed"),
        "flaky": (flaky, "succeeded"),
        "stream": (stream, "succeeded"),
    }


class Server:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_times: list[float] = []

    def start(self) -> None:
        log = (self.tmp / "server.log").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowdeck", "serve", "--port", str(self.port)],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = t0 + 60
        while True:
            assert self.proc.poll() is None, (self.tmp / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.02)
        self.ready_times.append(time.monotonic() - t0)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def harness(tmp: Path) -> Iterator[tuple[Server, Receiver]]:
    with receiver() as rec:
        env = {
            "FLOWDECK_DATA_DIR": str(tmp / "data"),
            "FLOWDECK_REGISTRATION": "open",
            "FLOWDECK_STOP_GRACE_S": "1",
            "FLOWDECK_SUPERVISOR_IDLE_S": "3",
            "FLOWDECK_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
            "FLOWDECK_WEBHOOK_TIMEOUT_S": "2",
            "FLOWDECK_WEBHOOK_RETRY_BASE_S": "0.2",
            "FLOWDECK_WEBHOOK_RETRY_MAX_S": "1",
            "FLOWDECK_LOG_LEVEL": "warning",
        }
        server = Server(tmp, env)
        server.start()
        try:
            yield server, rec
        finally:
            server.stop()


def call(server: Server, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request that waits out the moments the server is down."""
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    while True:
        try:
            return httpx.request(method, server.url + API + path, headers=headers, timeout=30, **kw)
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def leftover_processes(run_ids: set[str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        for var in environ:
            wanted = var.startswith(b"FLOWDECK_RUN_ID=") and var[16:].decode() in run_ids
            if wanted and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("seed", SEEDS)
def test_runs_survive_repeated_server_crashes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    counters = tmp_path / "counters"
    counters.mkdir()
    shapes = specs(counters)
    with harness(tmp_path) as (server, rec):
        with httpx.Client(base_url=server.url) as c:
            c.post(f"{API}/auth/register", json={"username": "crash", "password": STRONG})
            token = c.post(
                f"{API}/auth/login", json={"username": "crash", "password": STRONG}
            ).json()["token"]
        r = call(server, token, "POST", "/webhooks", json={"url": rec.url, "events": ["run.*"]})
        assert r.status_code == 201, r.text
        for text, _state in shapes.values():
            r = call(
                server,
                token,
                "POST",
                "/workflows",
                content=text,
                headers={"content-type": "application/yaml"},
            )
            assert r.status_code in (200, 201), r.text
        expected: dict[str, str] = {}
        kinds: dict[str, str] = {}
        streams: list[str] = []
        names = [n for n in shapes for _ in range(4)]
        rng.shuffle(names)
        for name in names:
            run_id = call(server, token, "POST", "/runs", json={"workflow": f"{name}@1"}).json()[
                "id"
            ]
            if name == "stream":
                records = [{"n": i} for i in range(50)]
                assert (
                    call(
                        server, token, "POST", f"/runs/{run_id}/inputs/records", json=records
                    ).status_code
                    == 200
                )
                assert call(
                    server, token, "POST", f"/runs/{run_id}/inputs/records/close"
                ).status_code in (200, 204)
                streams.append(run_id)
            assert call(server, token, "POST", f"/runs/{run_id}/start").status_code == 200
            expected[run_id] = shapes[name][1]
            kinds[run_id] = name
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            server.crash()
            server.start()
        deadline = time.monotonic() + 120
        while True:
            states = {
                run_id: call(server, token, "GET", f"/runs/{run_id}").json()["state"]
                for run_id in expected
            }
            if all(s in TERMINAL for s in states.values()):
                break
            assert time.monotonic() < deadline, {
                k: v for k, v in states.items() if v not in TERMINAL
            }
            time.sleep(0.2)

        # every run ended as it would have without crashes
        wrong = {
            run_id: (
                kinds[run_id],
                state,
                call(server, token, "GET", f"/runs/{run_id}").json()["error"],
            )
            for run_id, state in states.items()
            if state != expected[run_id]
        }
        assert wrong == {}
        # no execution of a step overlapped another execution of it
        assert not (counters / "overlaps").exists(), (counters / "overlaps").read_text()
        for run_id in expected:
            events = call(
                server, token, "GET", f"/runs/{run_id}/events", params={"limit": 1000}
            ).json()
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), run_id
            assert events[-1]["type"] == f"run.{states[run_id]}", (run_id, events[-1])
            for product in call(server, token, "GET", f"/runs/{run_id}/products").json():
                body = call(server, token, "GET", f"/runs/{run_id}/products/{product['id']}")
                assert body.status_code == 200
                assert len(body.content) == product["size"]
                assert hashlib.sha256(body.content).hexdigest() == product["sha256"]
        for run_id in streams:
            out = call(
                server,
                token,
                "GET",
                f"/runs/{run_id}/outputs/results",
                params={"from": 0, "limit": 10000},
            ).json()
            last = max(r["attempt"] for r in out["records"])
            final = [r["data"]["n"] for r in out["records"] if r["attempt"] == last]
            assert final == [2 * i for i in range(50)], run_id
        # every run.* event reached the receiver at least once (it may dedupe by id)
        wanted = {
            e["id"]
            for run_id in expected
            for e in call(
                server,
                token,
                "GET",
                f"/runs/{run_id}/events",
                params={"type": "run.*", "limit": 1000},
            ).json()
        }
        deadline = time.monotonic() + 60
        while True:
            got = {json.loads(r.body)["data"]["id"] for r in rec.received()}
            if wanted <= got:
                break
            assert time.monotonic() < deadline, f"missing webhook events {sorted(wanted - got)}"
            time.sleep(0.2)
        ids = [r.headers["webhook-id"] for r in rec.received()]
        assert len(set(ids)) >= len(wanted)  # one id per event: receivers can dedupe
        # no process of any run is left
        assert leftover_processes(set(expected)) == []
        print(
            f"\ncrash harness: seed {seed}, {len(expected)} runs, {KILLS} kills, 0 violations; "
            "restart to serving: " + ", ".join(f"{t:.2f}" for t in server.ready_times[1:]) + " s"
        )
