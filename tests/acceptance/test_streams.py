"""Stream ports end to end: a real server, real step processes, real HTTP, SSE and
WebSocket clients."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import LiveServer, param_server, register_and_login, wait_ended

API = "/api/v1"
BUFFER = 1000

# Doubles n; on attempt 1 of the flaky variant, fails after writing everything.
SCRIPT = (
    "import json, os, sys\\n"
    "for line in sys.stdin:\\n"
    "  r = json.loads(line)\\n"
    "  print(json.dumps({'n': r['n'] * 2}), flush=True)\\n"
    "sys.exit(FAIL and os.environ['FLOWDECK_ATTEMPT'] == '1')"
)


def spec(name: str, fail: bool = False, retries: int = 0) -> str:
    script = SCRIPT.replace("FAIL", "True" if fail else "False")
    return f"""name: {name}
version: "1"
inputs:
  records: {{type: stream}}
outputs:
  results: {{from: "${{{{ steps.t.outputs.out }}}}"}}
steps:
  t:
    run: [{sys.executable}, -u, -c, "{script}"]
    stdin: "${{{{ inputs.records }}}}"
    retries: {{count: {retries}, backoff: 0}}
    outputs:
      out: {{stdout: stream}}
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with param_server(
        request,
        tmp_path_factory.mktemp("streams"),
        stream_buffer_records=BUFFER,
        login_max_failures_per_address=10**6,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def token(srv: LiveServer) -> str:
    return register_and_login(srv, "streamer")


@pytest.fixture(scope="module")
def user(srv: LiveServer, token: str) -> Iterator[httpx.Client]:
    with srv.client(token) as client:
        for name, fail, retries in (("double", False, 0), ("flaky", True, 1)):
            r = client.post(
                f"{API}/workflows",
                content=spec(name, fail, retries),
                headers={"content-type": "application/yaml"},
            )
            assert r.status_code == 201, r.text
        yield client


@pytest.fixture(scope="module")
def other(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "stranger")) as client:
        yield client


def submit(c: httpx.Client, workflow: str = "double@1", start: bool = True) -> str:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "start": start})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def read_all(c: httpx.Client, run_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Long-poll an output until it is closed and read to its end."""
    records: list[dict[str, Any]] = []
    while True:
        r = c.get(f"{API}/runs/{run_id}/outputs/results", params={"from": start, "wait": 10})
        assert r.status_code == 200, r.text
        page = r.json()
        records += page["records"]
        start = page["next"]
        if page["closed"] and not page["records"]:
            return records


def ws_url(srv: LiveServer, path: str) -> str:
    return srv.url.replace("http://", "ws://") + API + path


def test_thousand_records_in_batches_read_live_and_late(user: httpx.Client) -> None:
    run_id = submit(user)
    offsets = []
    for batch in range(10):
        records = [{"n": batch * 100 + i} for i in range(100)]
        if batch % 2:
            body = "\n".join(json.dumps(r) for r in records) + "\n"
            r = user.post(
                f"{API}/runs/{run_id}/inputs/records",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            )
        else:
            r = user.post(f"{API}/runs/{run_id}/inputs/records", json=records)
        assert r.status_code == 200, r.text
        offsets.append((r.json()["first"], r.json()["last"]))
    assert offsets == [(b * 100, b * 100 + 99) for b in range(10)]
    r = user.post(f"{API}/runs/{run_id}/inputs/records/close")
    assert r.status_code == 200 and r.json() == {"port": "records", "records": 1000, "closed": True}

    live = read_all(user, run_id)
    assert [r["data"]["n"] for r in live] == [2 * i for i in range(1000)]
    assert [r["offset"] for r in live] == list(range(1000))
    assert {r["attempt"] for r in live} == {1}

    status = wait_ended(user, run_id)
    assert status["state"] == "succeeded"
    ports = {p["name"]: p for p in status["ports"]}
    assert ports["records"] == {
        "name": "records",
        "direction": "input",
        "url": f"{API}/runs/{run_id}/inputs/records",
        "records": 1000,
        "closed": True,
    }
    assert ports["results"]["url"] == f"{API}/runs/{run_id}/outputs/results"
    assert ports["results"]["records"] == 1000 and ports["results"]["closed"]

    late = user.get(f"{API}/runs/{run_id}/outputs/results", params={"limit": 10_000}).json()
    assert late["closed"] and late["next"] == 1000
    assert [r["data"] for r in late["records"]] == [r["data"] for r in live]


def test_records_pushed_while_staged_are_buffered(user: httpx.Client) -> None:
    run_id = submit(user, start=False)
    r = user.post(f"{API}/runs/{run_id}/inputs/records", json=[{"n": 1}, {"n": 2}])
    assert r.status_code == 200 and r.json()["first"] == 0
    assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
    assert user.post(f"{API}/runs/{run_id}/start").status_code == 200
    assert [r["data"]["n"] for r in read_all(user, run_id)] == [2, 4]
    assert wait_ended(user, run_id)["state"] == "succeeded"


def test_records_pushed_while_paused_wait_for_the_resume(user: httpx.Client) -> None:
    run_id = submit(user)
    url = f"{API}/runs/{run_id}/inputs/records"
    assert user.post(url, json=[{"n": 1}]).status_code == 200
    first = user.get(f"{API}/runs/{run_id}/outputs/results", params={"wait": 30}).json()
    assert [r["data"]["n"] for r in first["records"]] == [2]
    assert user.post(f"{API}/runs/{run_id}/pause").json()["state"] == "paused"
    assert user.post(url, json=[{"n": 2}, {"n": 3}]).json()["last"] == 2
    assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
    assert user.post(f"{API}/runs/{run_id}/resume").json()["state"] == "running"
    assert [r["data"]["n"] for r in read_all(user, run_id)] == [2, 4, 6]
    assert wait_ended(user, run_id)["state"] == "succeeded"


def test_websocket_push_and_websocket_and_sse_reads(
    srv: LiveServer, token: str, user: httpx.Client
) -> None:
    run_id = submit(user)
    auth = {"Authorization": f"Bearer {token}"}
    with connect(ws_url(srv, f"/runs/{run_id}/inputs/records"), additional_headers=auth) as ws:
        ws.send(json.dumps({"n": 1}))
        assert json.loads(ws.recv(timeout=30)) == {"first": 0, "last": 0, "records": 1}
        ws.send(json.dumps([{"n": 2}, {"n": 3}]))
        assert json.loads(ws.recv(timeout=30)) == {"first": 1, "last": 2, "records": 3}
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=30))["error"]["code"] == "invalid_input"

    url = ws_url(srv, f"/runs/{run_id}/outputs/results")
    with connect(url, additional_headers=auth) as ws:  # live: records come as written
        seen = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
        assert [m["data"]["n"] for m in seen] == [2, 4, 6]
        assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
        assert json.loads(ws.recv(timeout=30)) == {"closed": True, "next": 3}

    events = sse(user, run_id, {})
    assert [e["id"] for e in events if e["event"] == "record"] == ["0", "1", "2"]
    assert [json.loads(e["data"])["data"]["n"] for e in events if e["event"] == "record"] == [
        2,
        4,
        6,
    ]
    assert events[-1]["event"] == "closed"
    resumed = sse(user, run_id, {"Last-Event-ID": "1"})
    assert [e["id"] for e in resumed if e["event"] == "record"] == ["2"]
    assert wait_ended(user, run_id)["state"] == "succeeded"


def sse(c: httpx.Client, run_id: str, headers: dict[str, str]) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with c.stream(
        "GET",
        f"{API}/runs/{run_id}/outputs/results",
        headers={"Accept": "text/event-stream", **headers},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def test_buffer_limit_answers_429_and_stores_nothing(user: httpx.Client) -> None:
    run_id = submit(user, start=False)  # staged: nothing is delivered
    url = f"{API}/runs/{run_id}/inputs/records"
    assert user.post(url, json=[{"n": i} for i in range(BUFFER - 1)]).status_code == 200
    r = user.post(url, json=[{"n": 1}, {"n": 2}])
    assert r.status_code == 429 and r.json()["error"]["code"] == "buffer_full"
    assert int(r.headers["retry-after"]) >= 1
    status = user.get(f"{API}/runs/{run_id}").json()
    assert {p["name"]: p["records"] for p in status["ports"]}["records"] == BUFFER - 1
    assert user.post(url, json=[{"n": 1}]).json()["last"] == BUFFER - 1  # one still fits
    assert user.post(f"{API}/runs/{run_id}/kill").status_code == 200


def test_closed_port_409_unknown_port_404_bad_json_422(user: httpx.Client) -> None:
    run_id = submit(user, start=False)
    url = f"{API}/runs/{run_id}/inputs/records"
    r = user.post(url, content="[1, 2", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "line 1 column" in r.json()["error"]["message"]
    r = user.post(
        url, content='{"n": 1}\n{"n": \n', headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["line"] == 2
    r = user.post(url, json={"n": 1})
    assert r.status_code == 422 and "JSON array" in r.json()["error"]["message"]
    r = user.post(f"{API}/runs/{run_id}/inputs/recrods", json=[1])
    assert r.status_code == 404 and "recrods" in r.json()["error"]["message"]
    assert "did you mean 'records'" in r.json()["error"]["message"]
    assert user.get(f"{API}/runs/{run_id}/outputs/nothere").status_code == 404
    assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
    r = user.post(url, json=[{"n": 1}])
    assert r.status_code == 409 and r.json()["error"]["code"] == "port_closed"
    status = user.get(f"{API}/runs/{run_id}").json()
    assert {p["name"]: p["records"] for p in status["ports"]}["records"] == 0
    assert user.post(f"{API}/runs/{run_id}/kill").status_code == 200


def test_another_user_gets_404_and_tokens_in_urls_are_refused(
    srv: LiveServer, token: str, user: httpx.Client, other: httpx.Client
) -> None:
    run_id = submit(user, start=False)
    assert other.post(f"{API}/runs/{run_id}/inputs/records", json=[1]).status_code == 404
    assert other.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 404
    assert other.get(f"{API}/runs/{run_id}/outputs/results").status_code == 404
    r = other.get(f"{API}/runs/{run_id}/outputs/results", headers={"Accept": "text/event-stream"})
    assert r.status_code == 404
    other_token = other.headers["authorization"].removeprefix("Bearer ")
    for path in (f"/runs/{run_id}/inputs/records", f"/runs/{run_id}/outputs/results"):
        with pytest.raises(InvalidStatus) as denied:
            connect(
                ws_url(srv, path), additional_headers={"Authorization": f"Bearer {other_token}"}
            )
        assert denied.value.response.status_code == 404
        with pytest.raises(InvalidStatus) as denied:
            connect(ws_url(srv, path) + f"?access_token={token}")
        assert denied.value.response.status_code == 422
        assert b"not accepted in URLs" in denied.value.response.body
        with pytest.raises(InvalidStatus) as denied:
            connect(ws_url(srv, path))
        assert denied.value.response.status_code == 401
    with httpx.Client(base_url=srv.url) as anonymous:
        r = anonymous.get(f"{API}/runs/{run_id}/outputs/results", params={"access_token": token})
        assert r.status_code == 422 and "not accepted in URLs" in r.json()["error"]["message"]
    assert user.get(f"{API}/runs/{run_id}").json()["ports"][0]["records"] == 0
    assert user.post(f"{API}/runs/{run_id}/kill").status_code == 200


def test_session_cookie_websocket_needs_a_matching_origin(
    srv: LiveServer, user: httpx.Client
) -> None:
    with httpx.Client(base_url=srv.url) as c:
        r = c.post(
            f"{API}/auth/login",
            json={
                "username": "streamer",
                "password": "correct horse battery staple 42",
                "cookie": True,
            },
        )
        assert r.status_code == 200, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    run_id = submit(user, start=False)
    url = ws_url(srv, f"/runs/{run_id}/inputs/records")
    host = srv.url.removeprefix("http://")
    with pytest.raises(InvalidStatus) as denied:
        connect(url, additional_headers={"Cookie": cookie}, origin="http://evil.example")
    assert denied.value.response.status_code == 403
    with connect(url, additional_headers={"Cookie": cookie}, origin=f"http://{host}") as ws:
        ws.send("[1]")
        assert json.loads(ws.recv(timeout=30))["first"] == 0
    assert user.post(f"{API}/runs/{run_id}/kill").status_code == 200


def test_a_retried_step_reads_its_input_again_and_outputs_carry_attempts(
    user: httpx.Client,
) -> None:
    run_id = submit(user, "flaky@1")
    r = user.post(f"{API}/runs/{run_id}/inputs/records", json=[{"n": i} for i in range(5)])
    assert r.status_code == 200
    assert user.post(f"{API}/runs/{run_id}/inputs/records/close").status_code == 200
    records = read_all(user, run_id)
    status = wait_ended(user, run_id)
    assert status["state"] == "succeeded"
    assert [(r["attempt"], r["data"]["n"]) for r in records] == [
        (1, 0),
        (1, 2),
        (1, 4),
        (1, 6),
        (1, 8),
        (2, 0),
        (2, 2),
        (2, 4),
        (2, 6),
        (2, 8),
    ]
    assert [r["offset"] for r in records] == list(range(10))
    step = user.get(f"{API}/runs/{run_id}/steps").json()[0]
    assert step["attempts"] == 2
