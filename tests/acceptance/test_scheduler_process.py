"""The scheduler in a process of its own (``scheduler_process = true``): runs, commands,
events in order, webhooks and streams cross the process boundary; the scheduler process
is restarted when it dies alone, and dies with the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from flowdeck.executors.wire import same_process_alive
from flowdeck.services.scheduler_process import SchedulerProcess
from tests.acceptance.test_streams import spec as stream_spec
from tests.helpers import (
    LiveServer,
    free_port,
    param_server,
    register_and_login,
)
from tests.receiver import eventually, receiver

API = "/api/v1"
QUICK = """name: quick
version: "1"
steps:
  a: {run: [/bin/true]}
  b: {run: [/bin/true], needs: [a]}
"""
SLEEP = """name: nap
version: "1"
inputs:
  s: {type: string, default: "30"}
steps:
  s: {run: [sleep, "${{ inputs.s }}"]}
"""
ECHO = stream_spec("echo")  # doubles n, record by record


@pytest.fixture(
    scope="module",
    params=["sqlite", "postgres"],
)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with param_server(
        request,
        tmp_path_factory.mktemp("schedproc"),
        scheduler_process=True,
        login_max_failures_per_address=10**6,
        webhook_allow_networks="127.0.0.0/8",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    c = srv.client(register_and_login(srv, "sched-proc"), timeout=httpx.Timeout(30, read=20))
    for text in (QUICK, SLEEP, ECHO):
        r = c.post(f"{API}/workflows", content=text, headers={"content-type": "application/yaml"})
        assert r.status_code in (200, 201), r.text
    yield c
    c.close()


def _handle(srv: LiveServer) -> SchedulerProcess:
    handle = srv.ctx.runs.scheduler
    assert isinstance(handle, SchedulerProcess)
    return handle


def _wait_state(c: httpx.Client, run_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
    return eventually(
        lambda: (r := c.get(f"{API}/runs/{run_id}").json())["state"] in states and r,
        timeout,
        f"run {run_id} in {states}",
    )


def test_runs_are_run_elsewhere_and_every_event_streams_once_in_id_order(
    srv: LiveServer, user: httpx.Client
) -> None:
    handle = _handle(srv)
    assert handle.pid is not None and handle.pid != os.getpid()
    got: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with connect_sse(user, "GET", f"{API}/events") as source:
            assert source.response.status_code == 200
            ready.set()
            for sse in source.iter_sse():
                if sse.data:
                    got.append(sse.json())
                if sum(e["type"] == "run.succeeded" for e in got) >= 30:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    time.sleep(0.3)
    # submissions (committed here) and the scheduler's commits (there) interleave
    ids = [
        user.post(f"{API}/runs", json={"workflow": "quick@1", "start": True}).json()["id"]
        for _ in range(30)
    ]
    thread.join(60)
    assert not thread.is_alive(), f"{len(got)} events streamed"
    for run_id in ids:
        assert _wait_state(user, run_id, "succeeded")["state"] == "succeeded"
    streamed = [e["id"] for e in got]
    assert streamed == sorted(set(streamed))  # once each, in id order
    stored = []
    for run_id in ids:
        stored += [e["id"] for e in user.get(f"{API}/runs/{run_id}/events").json()]
    assert set(stored) <= set(streamed)  # none lost: the stream has each run's every event
    types = {e["type"] for e in got}
    assert {"run.queued", "run.running", "step.running", "step.succeeded"} <= types


def test_commands_are_answered_by_the_scheduler_process(
    srv: LiveServer, user: httpx.Client
) -> None:
    run_id = user.post(f"{API}/runs", json={"workflow": "nap@1", "start": True}).json()["id"]
    _wait_state(user, run_id, "running")
    eventually(lambda: user.get(f"{API}/runs/{run_id}").json()["steps"].get("running"))
    r = user.post(f"{API}/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 200 and r.json()["state"] == "paused", r.text
    r = user.post(f"{API}/runs/{run_id}/resume")
    assert r.status_code == 200 and r.json()["state"] == "running", r.text
    r = user.post(f"{API}/runs/{run_id}/kill")
    assert r.status_code == 200 and r.json()["state"] == "killed", r.text
    r = user.post(f"{API}/runs/{run_id}/resume")  # a refusal (it ended) crosses back
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "illegal_state"


def test_stream_records_and_webhooks_cross_both_ways(srv: LiveServer, user: httpx.Client) -> None:
    with receiver() as rec:
        r = user.post(
            f"{API}/runs",
            json={
                "workflow": "echo@1",
                "start": True,
                "callbacks": [{"url": rec.url, "events": ["run.succeeded"]}],
            },
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        _wait_state(user, run_id, "running")
        records = [{"n": i} for i in range(50)]
        r = user.post(f"{API}/runs/{run_id}/inputs/records", json=records[:1])
        assert r.status_code == 200, r.text
        # the step (there) writes its output; the reader (here) is woken, not polling
        first = user.get(f"{API}/runs/{run_id}/outputs/results", params={"from": 0, "wait": 10})
        assert [x["data"] for x in first.json()["records"]] == [{"n": 0}]
        r = user.post(f"{API}/runs/{run_id}/inputs/records", json=records[1:])
        assert r.status_code == 200, r.text
        assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
        read: list[Any] = []
        start = 0
        while True:
            page = user.get(
                f"{API}/runs/{run_id}/outputs/results", params={"from": start, "wait": 10}
            ).json()
            read += [x["data"] for x in page["records"]]
            start = page["next"]
            if page["closed"] and not page["records"]:
                break
        assert read == [{"n": 2 * r["n"]} for r in records]
        assert _wait_state(user, run_id, "succeeded")["state"] == "succeeded"
        # run.succeeded is committed by the scheduler process; its webhook is sent from here
        hits = eventually(
            lambda: [x for x in rec.received() if x.json()["type"] == "run.succeeded"]
        )
        assert hits[0].json()["data"]["run_id"] == run_id


def test_a_scheduler_process_that_dies_alone_is_replaced_and_its_runs_go_on(
    srv: LiveServer, user: httpx.Client
) -> None:
    handle = _handle(srv)
    old_pid, old_instance = handle.pid, handle.instance_id
    assert old_pid is not None
    run_id = user.post(
        f"{API}/runs", json={"workflow": "nap@1", "params": {"s": "2"}, "start": True}
    ).json()["id"]
    eventually(lambda: user.get(f"{API}/runs/{run_id}").json()["steps"].get("running"))
    os.kill(old_pid, signal.SIGKILL)
    eventually(lambda: handle.instance_id != old_instance, 30, "a new scheduler process")
    assert handle.pid != old_pid
    # the next one took the run over (same host: the step was re-adopted, not restarted)
    status = _wait_state(user, run_id, "succeeded", "failed", "system_error", timeout=60)
    assert status["state"] == "succeeded", status
    steps = user.get(f"{API}/runs/{run_id}").json()
    assert steps["steps"].get("succeeded") == 1
    after = user.post(f"{API}/runs", json={"workflow": "quick@1", "start": True}).json()["id"]
    assert _wait_state(user, after, "succeeded")["state"] == "succeeded"


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_the_scheduler_process_dies_with_the_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FLOWDECK_SCHEDULER_PROCESS": "true", "FLOWDECK_SUPERVISOR_IDLE_S": "2"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowdeck", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        eventually(lambda: _healthy(port), 30, "the server")
        [child] = [
            p
            for p in _children(proc.pid)
            if "scheduler_process" in Path(f"/proc/{p}/cmdline").read_text()
        ]
        proc.kill()  # as a crash would: no word to the scheduler process
        proc.wait(10)
        eventually(lambda: not same_process_alive(child, None), 10, "its end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
