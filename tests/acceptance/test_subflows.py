"""Sub-workflows (`uses:` steps) through HTTP with real subprocesses: the child run's
steps nested in the parent's status, steps and events; control reaches into it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import (
    TERMINAL,
    LiveServer,
    live_server,
    make_settings,
    register_and_login,
    wait_ended,
)

API = "/api/v1"
WORKFLOWS = [
    """
name: inner
version: "1"
inputs:
  word: {type: string}
outputs:
  shout: {from: "${{ steps.upper.outputs.text }}"}
steps:
  echo:
    run: [echo, "${{ inputs.word }}"]
    outputs:
      text: {stdout: text}
  upper:
    run: [sh, -c, 'echo "$0" | tr a-z A-Z', "${{ steps.echo.outputs.text }}"]
    outputs:
      text: {stdout: text}
""",
    """
name: outer
version: "1"
inputs:
  who: {type: string}
outputs:
  final: {from: "${{ steps.after.outputs.text }}"}
steps:
  sub:
    uses: inner@1
    with:
      word: "hello ${{ inputs.who }}"
  after:
    run: [echo, "${{ steps.sub.outputs.shout }}!"]
    outputs:
      text: {stdout: text}
""",
    """
name: slow-inner
version: "1"
steps:
  nap:
    run: [sleep, "30"]
""",
    """
name: slow-outer
version: "1"
steps:
  sub:
    uses: slow-inner@1
  never:
    needs: [sub]
    run: [echo, never]
""",
    """
name: missing-outer
version: "1"
steps:
  sub:
    uses: nosuchworkflow@1
""",
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("subflows") / "data",
        slots=2,
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "nester")) as client:
        for text in WORKFLOWS:
            r = client.post(
                f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
            )
            assert r.status_code in (200, 201), r.text
        yield client


def wait(
    c: httpx.Client, run_id: str, states: set[str] = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    return wait_ended(c, run_id, states, timeout)


def start(c: httpx.Client, workflow: str, **params: Any) -> str:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "params": params, "start": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_sub_workflow_runs_as_a_child_nested_in_the_parent(user: httpx.Client) -> None:
    parent = start(user, "outer@1", who="flowdeck")
    status = wait(user, parent)
    assert status["state"] == "succeeded", status
    assert status["outputs"] == {"final": "HELLO FLOWDECK!"}
    [child] = status["children"]
    assert child["step"] == "sub" and child["state"] == "succeeded"
    assert child["steps"] == {"succeeded": 2}
    steps = {s["label"]: s for s in user.get(f"{API}/runs/{parent}/steps").json()}
    assert list(steps) == ["after", "sub", "sub/echo", "sub/upper"]
    assert steps["sub"]["outputs"] == {"shout": "HELLO FLOWDECK"}
    assert steps["sub/upper"]["run_id"] == child["run_id"]
    events = user.get(f"{API}/runs/{parent}/events", params={"limit": 1000}).json()
    nested = [e["type"] for e in events if e["run_id"] == child["run_id"]]
    assert "step.succeeded" in nested and nested[-1] == "run.succeeded"
    assert any(e["type"] == "subflow.started" for e in events)


def _child_running(c: httpx.Client, parent: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        steps = {s["label"]: s for s in c.get(f"{API}/runs/{parent}/steps").json()}
        if steps.get("sub/nap", {}).get("state") == "running":
            return steps["sub/nap"]
        assert time.monotonic() < deadline, steps
        time.sleep(0.05)


def test_pause_resume_and_stop_of_the_parent_reach_the_child(user: httpx.Client) -> None:
    parent = start(user, "slow-outer@1")
    nap = _child_running(user, parent)
    child = nap["run_id"]
    assert user.post(f"{API}/runs/{parent}/pause").status_code == 200
    assert user.get(f"{API}/runs/{child}").json()["state"] == "paused"
    assert user.post(f"{API}/runs/{parent}/resume").status_code == 200
    assert user.get(f"{API}/runs/{child}").json()["state"] == "running"
    r = user.post(f"{API}/runs/{parent}/stop", json={"grace_s": 1})
    assert r.status_code == 200, r.text
    assert wait(user, parent)["state"] == "cancelled"
    assert wait(user, child)["state"] == "cancelled"
    steps = {s["label"]: s["state"] for s in user.get(f"{API}/runs/{parent}/steps").json()}
    assert steps["sub/nap"] in ("cancelled", "killed") and steps["never"] == "cancelled"


def test_kill_of_the_parent_kills_the_child(user: httpx.Client) -> None:
    parent = start(user, "slow-outer@1")
    child = _child_running(user, parent)["run_id"]
    assert user.post(f"{API}/runs/{parent}/kill").status_code == 200
    assert wait(user, child)["state"] == "killed"


def test_a_missing_sub_workflow_fails_the_step_with_its_name(user: httpx.Client) -> None:
    status = wait(user, start(user, "missing-outer@1"))
    assert status["state"] == "failed"
    assert "nosuchworkflow@1" in status["error"]["message"]
