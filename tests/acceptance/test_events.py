"""Events: lists with filters, and live Server-Sent Event streams that resume without a gap
or a duplicate, through a real server with real subprocesses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.helpers import LiveServer, live_server, make_settings, register_and_login

API = "/api/v1"
TERMINAL = ("run.succeeded", "run.failed", "run.cancelled", "run.killed", "run.system_error")
SLOW = (
    'name: slow3\nversion: "1"\nsteps:\n'
    "  a: {run: [sleep, '0.3']}\n"
    "  b: {run: [sleep, '0.3'], needs: [a]}\n"
    "  c: {run: [sleep, '0.3'], needs: [b]}\n"
)
QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("events"),
        login_max_failures_per_address=10**6,
        sse_keepalive_s=0.2,
    )
    with live_server(settings) as server:
        yield server


def client_for(srv: LiveServer, name: str) -> httpx.Client:
    c = srv.client(register_and_login(srv, name), timeout=httpx.Timeout(30, read=10))
    for spec in (SLOW, QUICK):
        r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code in (200, 201), r.text
    return c


@pytest.fixture(scope="module")
def alice(srv: LiveServer) -> Iterator[httpx.Client]:
    c = client_for(srv, "alice-events")
    yield c
    c.close()


@pytest.fixture(scope="module")
def bob(srv: LiveServer) -> Iterator[httpx.Client]:
    c = client_for(srv, "bob-events")
    yield c
    c.close()


def submit(c: httpx.Client, workflow: str) -> str:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "start": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_done(c: httpx.Client, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while c.get(f"{API}/runs/{run_id}").json()["state"] in ("staged", "queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def read_stream(
    c: httpx.Client,
    url: str,
    until: Any,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Events from an SSE stream (their data, parsed) until ``until(events)`` is true."""
    got: list[dict[str, Any]] = []
    with connect_sse(c, "GET", url, headers=headers or {}, params=params) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:
                continue
            event = sse.json()
            assert sse.id == str(event["id"])
            got.append(event)
            if until(got):
                break
    return got


def test_a_reconnected_run_stream_gets_exactly_the_missed_events(alice: httpx.Client) -> None:
    run_id = submit(alice, "slow3@1")
    url = f"{API}/runs/{run_id}/events"
    first = read_stream(alice, url, lambda got: len(got) >= 3)  # then disconnect mid-run
    wait_done(alice, run_id)
    rest = read_stream(
        alice,
        url,
        lambda got: got[-1]["type"] in TERMINAL,
        headers={"Last-Event-ID": str(first[-1]["id"])},
    )
    stored = alice.get(url, params={"limit": 1000}).json()
    assert [e["id"] for e in first + rest] == [e["id"] for e in stored]
    assert [e["seq"] for e in first + rest] == list(range(1, len(stored) + 1))
    assert stored[-1]["type"] == "run.succeeded"


def test_a_live_run_stream_follows_the_run_to_its_end(alice: httpx.Client) -> None:
    run_id = submit(alice, "slow3@1")
    got = read_stream(
        alice,
        f"{API}/runs/{run_id}/events",
        lambda got: got[-1]["type"] in TERMINAL,
        params={"type": ["run.*", "step.succeeded"]},
    )
    types = [e["type"] for e in got]
    assert types[0] == "run.staged" and types[-1] == "run.succeeded"
    assert types.count("step.succeeded") == 3
    assert not any(t.startswith("step.") and t != "step.succeeded" for t in types)


def test_the_global_stream_resumes_and_shows_nothing_of_other_users(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    # Bob listens live while Alice runs something and then Bob does.
    bob_events: list[dict[str, Any]] = []
    bob_run: list[str] = []

    def listen() -> None:
        bob_events.extend(
            read_stream(
                bob,
                f"{API}/events",
                lambda got: (
                    bool(bob_run)
                    and any(e["run_id"] == bob_run[0] and e["type"] in TERMINAL for e in got)
                ),
            )
        )

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.3)  # the stream starts "from now"
    alice_run = submit(alice, "quick@1")
    wait_done(alice, alice_run)
    bob_run.append(submit(bob, "quick@1"))
    listener.join(30)
    assert not listener.is_alive()
    assert {e["run_id"] for e in bob_events} == {bob_run[0]}
    assert bob_events[-1]["type"] == "run.succeeded"

    # Alice's global stream resumes after an id with what she missed, hers only.
    mine = alice.get(f"{API}/events", params={"run": alice_run, "limit": 1000}).json()
    assert mine and all(e["run_id"] == alice_run for e in mine)
    resumed = read_stream(
        alice,
        f"{API}/events",
        lambda got: got[-1]["id"] == mine[-1]["id"],
        headers={"Last-Event-ID": str(mine[1]["id"])},
        params={"run": alice_run},
    )
    assert [e["id"] for e in resumed] == [e["id"] for e in mine[2:]]


def test_event_lists_filter_and_respect_privileges(
    srv: LiveServer, alice: httpx.Client, bob: httpx.Client
) -> None:
    run_id = submit(alice, "quick@1")
    wait_done(alice, run_id)
    failed_or_done = alice.get(
        f"{API}/events", params={"run": run_id, "type": ["run.succeeded", "step.*"]}
    ).json()
    assert {e["type"] for e in failed_or_done} == {
        "run.succeeded",
        "step.pending",
        "step.running",
        "step.succeeded",
    }
    everything = alice.get(f"{API}/events", params={"run": run_id}).json()
    page = alice.get(
        f"{API}/events", params={"run": run_id, "after": everything[1]["id"], "limit": 2}
    ).json()
    assert [e["id"] for e in page] == [e["id"] for e in everything[2:4]]
    assert bob.get(f"{API}/events", params={"run": run_id}).json() == []
    assert bob.get(f"{API}/runs/{run_id}/events").status_code == 404
    with httpx.Client(base_url=srv.url, headers=bob.headers) as raw:
        r = raw.get(f"{API}/runs/{run_id}/events", headers={"accept": "text/event-stream"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_bad_stream_requests_are_4xx_that_say_what_is_wrong(alice: httpx.Client) -> None:
    r = alice.get(f"{API}/events", params={"type": "Run.*!"})
    assert r.status_code == 422 and "Run.*!" in r.json()["error"]["message"]
    r = alice.get(
        f"{API}/events", headers={"accept": "text/event-stream", "last-event-id": "yesterday"}
    )
    assert r.status_code == 422 and "Last-Event-ID" in r.json()["error"]["message"]


def test_streams_send_keepalive_comments(alice: httpx.Client) -> None:
    comments = 0
    with alice.stream("GET", f"{API}/events", headers={"accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    break
    assert comments == 2
