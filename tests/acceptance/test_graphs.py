"""Run graphs through HTTP with real subprocesses: parallel nodes, conditions, bindings,
validation, privileges, drafts built in several calls, whole-graph control, events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.helpers import LiveServer, live_server, make_settings, register_and_login

API = "/api/v1"
GRAPH_DONE = {"succeeded", "failed", "cancelled", "killed"}

WORKFLOWS = [
    """
name: source
version: "1"
inputs:
  seed: {type: string}
outputs:
  text: {from: "${{ steps.write.outputs.text }}"}
steps:
  write:
    run: [sh, -c, 'echo "$0" > seed.txt', "${{ inputs.seed }}"]
    outputs:
      text: {path: seed.txt}
""",
    """
name: middle
version: "1"
inputs:
  data: {type: file}
  tag: {type: string}
outputs:
  out: {from: "${{ steps.work.outputs.out }}"}
steps:
  work:
    run: [sh, -c, 'sleep 1; cat "$0" > out.txt; echo "$1" >> out.txt', "${{ inputs.data }}",
          "${{ inputs.tag }}"]
    outputs:
      out: {path: out.txt}
""",
    """
name: join
version: "1"
inputs:
  left: {type: file}
  right: {type: file}
outputs:
  joined: {from: "${{ steps.cat.outputs.joined }}"}
steps:
  cat:
    run: [cat, "${{ inputs.left }}", "${{ inputs.right }}"]
    outputs:
      joined: {stdout: text}
""",
    """
name: maybe-fail
version: "1"
inputs:
  fail: {type: bool, default: false}
steps:
  main:
    run: [sh, -c, 'test "$0" = false', "${{ inputs.fail }}"]
""",
    """
name: cleanup
version: "1"
steps:
  main:
    run: [echo, cleaning up]
""",
    """
name: counter
version: "1"
inputs:
  n: {type: int}
steps:
  main:
    run: [echo, "${{ inputs.n }}"]
""",
    """
name: sleeper
version: "1"
steps:
  main:
    run: [sleep, "30"]
""",
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("graphs") / "data",
        slots=4,
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "grapher")) as client:
        for text in WORKFLOWS:
            r = client.post(
                f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
            )
            assert r.status_code in (200, 201), r.text
        yield client


def wait_graph(c: httpx.Client, graph_id: str, states: set[str] = GRAPH_DONE) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        graph: dict[str, Any] = c.get(f"{API}/graphs/{graph_id}").json()
        if graph["state"] in states:
            return graph
        assert time.monotonic() < deadline, graph
        time.sleep(0.05)


def nodes(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in graph["nodes"]}


def create(c: httpx.Client, **body: Any) -> httpx.Response:
    return c.post(f"{API}/graphs", json=body)


DIAMOND: dict[str, Any] = {
    "name": "diamond",
    "nodes": {
        "a": {"workflow": "source@1", "params": {"seed": "root"}},
        "b": {"workflow": "middle@1", "params": {"tag": "left"}},
        "c": {"workflow": "middle@1", "params": {"tag": "right"}},
        "d": {"workflow": "join@1"},
    },
    "bindings": [
        {"from": "a.text", "to": "b.data"},
        {"from": "a.text", "to": "c.data"},
        {"from": "b.out", "to": "d.left"},
        {"from": "c.out", "to": "d.right"},
    ],
}


def test_diamond_runs_its_middle_nodes_in_parallel_and_joins_their_outputs(
    user: httpx.Client,
) -> None:
    r = create(user, **DIAMOND, submit=True)
    assert r.status_code == 201, r.text
    graph = wait_graph(user, r.json()["id"])
    assert graph["state"] == "succeeded", graph
    assert graph["counts"] == {"succeeded": 4}
    n = nodes(graph)
    b_start, b_end = (datetime.fromisoformat(n["b"][k]) for k in ("started_at", "finished_at"))
    c_start, c_end = (datetime.fromisoformat(n["c"][k]) for k in ("started_at", "finished_at"))
    assert b_start < c_end and c_start < b_end  # the two running intervals overlap
    assert n["d"]["outputs"]["joined"] == "root\nleft\nroot\nright"
    # each node is a normal run of the owner, tagged with its graph
    run = user.get(f"{API}/runs/{n['d']['run_id']}").json()
    assert f"graph:{graph['id']}" in run["tags"]
    types = [e["type"] for e in user.get(f"{API}/graphs/{graph['id']}/events").json()]
    assert types[0] == "graph.created" and types[-1] == "graph.succeeded"
    assert types.count("node.started") == 4 and types.count("node.succeeded") == 4


@pytest.mark.parametrize(("fail", "cleanup"), [(True, "succeeded"), (False, "skipped")])
def test_a_failed_edge_runs_cleanup_only_when_upstream_failed(
    user: httpx.Client, fail: bool, cleanup: str
) -> None:
    r = create(
        user,
        nodes={
            "work": {"workflow": "maybe-fail@1", "params": {"fail": fail}},
            "cleanup": {"workflow": "cleanup@1"},
        },
        edges=[{"from": "work", "to": "cleanup", "condition": "failed"}],
        submit=True,
    )
    assert r.status_code == 201, r.text
    graph = wait_graph(user, r.json()["id"])
    n = nodes(graph)
    assert n["work"]["state"] == ("failed" if fail else "succeeded")
    assert n["cleanup"]["state"] == cleanup
    assert (n["cleanup"]["run_id"] is None) is (cleanup == "skipped")
    assert graph["state"] == "succeeded"  # a handled failure does not fail the graph


def test_a_file_output_bound_to_an_int_input_is_refused_before_anything_runs(
    user: httpx.Client,
) -> None:
    before = user.get(f"{API}/runs", params={"limit": 500}).json()["items"]
    graphs_before = user.get(f"{API}/graphs").json()["items"]
    r = create(
        user,
        nodes={
            "a": {"workflow": "source@1", "params": {"seed": "x"}},
            "n": {"workflow": "counter@1"},
        },
        bindings=[{"from": "a.text", "to": "n.n"}],
        submit=True,
    )
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "a.text" in message and "n.n" in message and "file" in message and "int" in message
    assert user.get(f"{API}/runs", params={"limit": 500}).json()["items"] == before
    assert user.get(f"{API}/graphs").json()["items"] == graphs_before


def test_unknown_nodes_and_cycles_are_named(user: httpx.Client) -> None:
    r = create(
        user,
        name="broken",
        nodes={
            "x": {"workflow": "cleanup@1"},
            "y": {"workflow": "cleanup@1"},
            "z": {"workflow": "cleanup@1"},
        },
        edges=[
            {"from": "x", "to": "y"},
            {"from": "y", "to": "z"},
            {"from": "z", "to": "x"},
            {"from": "x", "to": "nowhere"},
        ],
    )
    assert r.status_code == 201, r.text  # a draft may be incomplete
    graph_id = r.json()["id"]
    problems = user.post(f"{API}/graphs/{graph_id}/validate").json()
    assert problems["ok"] is False
    text = " | ".join(p["message"] for p in problems["problems"])
    assert "unknown node 'nowhere'" in text
    assert "cycle: x → y → z → x" in text
    r = user.post(f"{API}/graphs/{graph_id}/submit")
    assert r.status_code == 422 and "cycle" in r.json()["error"]["message"]
    assert user.get(f"{API}/graphs/{graph_id}").json()["state"] == "draft"


def test_a_graph_is_built_in_several_calls_then_submitted(user: httpx.Client) -> None:
    graph_id = create(user, name="stepwise").json()["id"]
    for name, node in DIAMOND["nodes"].items():
        r = user.put(f"{API}/graphs/{graph_id}/nodes/{name}", json=node)
        assert r.status_code == 200, r.text
    r = user.put(f"{API}/graphs/{graph_id}/nodes/extra", json={"workflow": "cleanup@1"})
    assert [n["name"] for n in r.json()["nodes"]] == ["a", "b", "c", "d", "extra"]
    for binding in DIAMOND["bindings"]:
        assert user.post(f"{API}/graphs/{graph_id}/bindings", json=binding).status_code == 200
    r = user.post(f"{API}/graphs/{graph_id}/edges", json={"from": "d", "to": "extra"})
    assert r.status_code == 200
    r = user.delete(f"{API}/graphs/{graph_id}/nodes/extra")
    assert r.json()["edges"] == [] and len(r.json()["nodes"]) == 4
    assert user.get(f"{API}/graphs/{graph_id}").json()["state"] == "draft"
    r = user.post(f"{API}/graphs/{graph_id}/submit")
    assert r.status_code == 200, r.text
    assert wait_graph(user, graph_id)["state"] == "succeeded"
    r = user.put(f"{API}/graphs/{graph_id}/nodes/late", json={"workflow": "cleanup@1"})
    assert r.status_code == 409  # a submitted graph is not a draft any more


def test_another_user_sees_nothing_of_a_graph(srv: LiveServer, user: httpx.Client) -> None:
    graph_id = create(user, name="private", nodes={"c": {"workflow": "cleanup@1"}}).json()["id"]
    with srv.client(register_and_login(srv, "stranger")) as other:
        for method, path in [
            ("GET", f"/graphs/{graph_id}"),
            ("GET", f"/graphs/{graph_id}/events"),
            ("POST", f"/graphs/{graph_id}/submit"),
            ("POST", f"/graphs/{graph_id}/kill"),
            ("PUT", f"/graphs/{graph_id}/nodes/x"),
            ("DELETE", f"/graphs/{graph_id}"),
        ]:
            body = {"workflow": "cleanup@1"} if method == "PUT" else None
            r = other.request(method, API + path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        assert other.get(f"{API}/graphs").json()["items"] == []
    assert user.get(f"{API}/graphs/{graph_id}").json()["state"] == "draft"


def _running(c: httpx.Client, graph_id: str, node: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        n = nodes(c.get(f"{API}/graphs/{graph_id}").json())[node]
        if n["state"] == "running":
            return n
        assert time.monotonic() < deadline, n
        time.sleep(0.05)


def test_pause_resume_and_stop_apply_to_the_whole_graph(user: httpx.Client) -> None:
    r = create(
        user,
        nodes={"slow": {"workflow": "sleeper@1"}, "after": {"workflow": "cleanup@1"}},
        edges=[{"from": "slow", "to": "after", "condition": "completed"}],
        submit=True,
    )
    graph_id = r.json()["id"]
    slow = _running(user, graph_id, "slow")
    r = user.post(f"{API}/graphs/{graph_id}/pause")
    assert r.status_code == 200 and r.json()["state"] == "paused", r.text
    assert user.get(f"{API}/runs/{slow['run_id']}").json()["state"] == "paused"
    r = user.post(f"{API}/graphs/{graph_id}/resume")
    assert r.json()["state"] == "running"
    assert user.get(f"{API}/runs/{slow['run_id']}").json()["state"] == "running"
    r = user.post(f"{API}/graphs/{graph_id}/stop", json={"grace_s": 0})
    assert r.status_code == 200, r.text
    graph = wait_graph(user, graph_id)
    assert graph["state"] == "cancelled"
    n = nodes(graph)
    assert n["slow"]["state"] == "cancelled" and n["after"]["state"] == "cancelled"
    assert n["after"]["run_id"] is None


def test_kill_a_graph(user: httpx.Client) -> None:
    r = create(
        user,
        nodes={"s1": {"workflow": "sleeper@1"}, "s2": {"workflow": "sleeper@1"}},
        submit=True,
    )
    graph_id = r.json()["id"]
    _running(user, graph_id, "s1")
    _running(user, graph_id, "s2")
    r = user.post(f"{API}/graphs/{graph_id}/kill")
    assert r.status_code == 200 and r.json()["state"] == "killed", r.text
    deadline = time.monotonic() + 30
    while {n["state"] for n in user.get(f"{API}/graphs/{graph_id}").json()["nodes"]} != {"killed"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_graph_events_flow_through_the_owners_event_stream(user: httpx.Client) -> None:
    r = create(user, name="streamed", nodes={"c": {"workflow": "cleanup@1"}}, submit=True)
    graph_id = r.json()["id"]
    wait_graph(user, graph_id)
    events = user.get(f"{API}/events", params={"run": graph_id, "type": "graph.*"}).json()
    assert [e["type"] for e in events] == ["graph.created", "graph.running", "graph.succeeded"]
    assert {e["subject_kind"] for e in events} == {"graph"}
    with user.stream(
        "GET", f"{API}/graphs/{graph_id}/events", headers={"accept": "text/event-stream"}
    ) as stream:
        seen = []
        for line in stream.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["type"])
                if seen[-1] == "graph.succeeded":
                    break
    assert seen[0] == "graph.created" and "node.started" in seen
