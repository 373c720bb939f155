"""The SDK's webhooks, stream ports, run graphs, reruns and CWL pushes against the real
server (real subprocesses, a real webhook receiver on 127.0.0.1), through both faces of
the SDK (tests/faces.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowdeck.client import Client, ConflictError, InvalidRequest, NotFoundError
from tests.faces import Connect
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique
from tests.receiver import eventually, receiver

EXAMPLES = Path(__file__).parents[2] / "examples"
CWL = Path(__file__).parents[1] / "data" / "cwl"
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "30"]\n'
TWO = """name: two
version: "1"
inputs:
  word: {type: string, default: hi}
outputs:
  text: {from: "${{ steps.b.outputs.out }}"}
steps:
  a:
    run: [sh, -c, "echo ${{ inputs.word }} > a.txt"]
    outputs:
      out: {path: a.txt}
  b:
    run: [sh, -c, "tr a-z A-Z < ${{ steps.a.outputs.out }} > b.txt"]
    outputs:
      out: {path: b.txt}
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("sdk-areas"),
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
        webhook_retry_base_s=0.05,
        webhook_retry_max_s=0.2,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def fd(
    srv: LiveServer, face: Connect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    with face(srv.url) as client:
        name = unique("areas")
        client.register(name, STRONG)
        client.login(name, STRONG)
        specs = tmp_path_factory.mktemp("specs")
        for file, text in (("sleepy.yaml", SLEEPY), ("two.yaml", TWO)):
            (specs / file).write_text(text)
            client.push_workflow(specs / file)
        client.push_workflow(EXAMPLES / "streams" / "flowdeck.yaml")
        yield client


def test_webhooks_add_list_update_rotate_deliveries_redeliver_delete(fd: Client) -> None:
    with receiver() as rec:
        hook = fd.add_webhook(rec.url, ["run.succeeded"])
        assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
        assert [h["id"] for h in fd.webhooks()][:1] == [hook["id"]]
        assert "secret" not in fd.webhook(hook["id"]) or not fd.webhook(hook["id"])["secret"]
        run = fd.create_run("two@1", start=True)
        assert run.wait(timeout=60)["state"] == "succeeded"
        eventually(lambda: rec.received(), what="the delivery")
        delivered = eventually(
            lambda: [d for d in fd.deliveries(hook["id"]) if d["state"] == "succeeded"],
            what="a succeeded delivery",
        )
        assert delivered[0]["type"] == "run.succeeded"
        assert delivered[0]["attempts"][0]["status"] == 204
        fd.redeliver(hook["id"], delivered[0]["id"])
        eventually(lambda: len(rec.received()) == 2, what="the redelivery")
        # more than the server gives in one page: the SDK asks page after page
        assert len(fd.deliveries(hook["id"], limit=300)) == 1
        assert hook["id"] in [h["id"] for h in fd.webhooks(limit=300)]
        first, again = rec.received()
        assert first.headers["webhook-id"] == again.headers["webhook-id"]
        rotated = fd.rotate_webhook_secret(hook["id"])
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
        off = fd.update_webhook(hook["id"], enabled=False, events=["run.*"])
        assert off["enabled"] is False and off["events"] == ["run.*"]
        fd.delete_webhook(hook["id"])
        with pytest.raises(NotFoundError):
            fd.webhook(hook["id"])
    with pytest.raises(InvalidRequest) as refused:
        fd.add_webhook("http://10.1.2.3/hook")
    assert refused.value.code == "url_refused"


def test_callbacks_are_made_with_the_run(fd: Client) -> None:
    with receiver() as rec:
        run = fd.create_run(
            "two@1", start=True, callbacks=[rec.url, {"url": rec.url, "events": ["run.*"]}]
        )
        made = run.data["callbacks"]
        assert [c["events"] for c in made] == [["*"], ["run.*"]]
        assert all(c["secret"].startswith("whsec_") for c in made)
        assert run.wait(timeout=60)["state"] == "succeeded"
        types = eventually(
            lambda: (
                (t := [r.json()["type"] for r in rec.received()]).count("run.succeeded") == 2 and t
            ),
            what="both callbacks' deliveries",
        )
        assert "step.succeeded" in types  # the first callback took every event
    with pytest.raises(InvalidRequest) as refused:
        fd.create_run("two@1", callbacks=["http://10.1.2.3/hook"])
    assert refused.value.code == "url_refused"


def test_records_pushed_into_a_streaming_run_come_out_of_its_output_port(fd: Client) -> None:
    run = fd.create_run("double@1.0", start=True)
    port = run.input("records")
    answer = port.write([{"n": 1}, {"n": 2}])
    assert (answer["first"], answer["last"]) == (0, 1)
    port.write_ndjson('{"n": 3}\n')
    reader = run.output("results").read(timeout=60)
    first = [next(reader) for _ in range(3)]
    assert [r.data["double"] for r in first] == [2, 4, 6]
    assert [r.offset for r in first] == [0, 1, 2] and first[0].attempt == 1
    assert [r.data["n"] for r in run.output("results").read(follow=False)] == [1, 2, 3]
    assert run.output("results").page(from_=2)["records"][0]["offset"] == 2
    assert port.close()["closed"] is True
    assert list(reader) == []  # ends once the port is closed
    assert run.wait(timeout=60)["state"] == "succeeded"
    ports = {p["name"]: p for p in run.ports()}
    assert ports["results"]["records"] == 3 and ports["results"]["closed"] is True
    # a late reader gets everything, by long poll or by server-sent events, from any offset
    assert [r.data["n"] for r in run.output("results").read(from_=1)] == [2, 3]
    assert list(run.output("results").read(sse=True, timeout=30)) == first
    with pytest.raises(ConflictError) as closed:
        port.write([{"n": 4}])
    assert closed.value.code == "port_closed"
    with pytest.raises(NotFoundError):
        run.input("nope").write([1])


def test_a_graph_is_built_submitted_watched_and_its_events_followed(fd: Client) -> None:
    draft = fd.create_graph("sdk-graph")
    assert draft.state == "draft"
    draft.set_node("first", "two@1", params={"word": "abc"})
    draft.set_node("second", "two@1")
    draft.set_node("extra", "two@1")
    draft.add_edge("first", "extra")
    draft.remove_edge("first", "extra")
    assert set(draft.remove_node("extra")["nodes"][0]) and "extra" not in draft.nodes
    draft.add_edge("first", "second")
    assert draft.bind("first.text", "second.word")["bindings"]
    assert not draft.unbind("second.word")["bindings"]
    assert draft.validate()["ok"] is True
    draft.submit()
    seen: list[str] = []
    final = draft.wait(progress=lambda g: seen.append(g["state"]), timeout=90)
    assert final["state"] == "succeeded" and seen[-1] == "succeeded"
    assert draft.nodes["second"]["state"] == "succeeded"
    types = [e.type for e in draft.events(timeout=30)]
    assert types[0] == "graph.created" and types[-1] == "graph.succeeded"
    assert "node.started" in types
    assert "graph.succeeded" in [e.type for e in draft.list_events()]
    assert draft.id in [g["id"] for g in fd.graphs()]
    assert fd.graph(draft.id).nodes["first"]["state"] == "succeeded"
    with pytest.raises(InvalidRequest) as bad:
        fd.submit_graph({"a": {"workflow": "two@1"}}, edges=[{"from": "a", "to": "nowhere"}])
    assert "nowhere" in bad.value.message or bad.value.details


def test_graph_pause_resume_stop_and_kill(fd: Client) -> None:
    graph = fd.submit_graph(
        {"nap": {"workflow": "sleepy@1"}, "after": {"workflow": "two@1"}},
        edges=[{"from": "nap", "to": "after"}],
    )

    def node_running() -> bool:
        return graph.status()["nodes"][0]["state"] == "running" or any(
            n["state"] == "running" for n in graph.data["nodes"]
        )

    eventually(node_running, timeout=30, what="the node's run")
    assert graph.pause()["state"] == "paused"
    assert graph.resume()["state"] == "running"
    graph.stop(grace_s=1)
    assert graph.wait(timeout=60)["state"] == "cancelled"
    other = fd.submit_graph({"nap": {"workflow": "sleepy@1"}})
    assert other.kill()["state"] == "killed"
    with pytest.raises(NotFoundError):
        fd.graph("graph_nothing")


def test_rerun_from_a_step(fd: Client) -> None:
    run = fd.create_run("two@1", params={"word": "hey"}, start=True)
    assert run.wait(timeout=60)["state"] == "succeeded"
    again = run.rerun()
    assert again.id != run.id
    assert again.wait(timeout=60)["state"] == "succeeded"
    assert {s["name"]: s["state"] for s in again.steps()} == {"a": "cached", "b": "cached"}
    forced = run.rerun(from_step="b", params={"word": "hey"})
    assert forced.wait(timeout=60)["state"] == "succeeded"
    assert {s["name"]: s["state"] for s in forced.steps()} == {"a": "cached", "b": "succeeded"}
    busy = fd.create_run("sleepy@1", start=True)
    with pytest.raises(ConflictError):
        busy.rerun()
    busy.kill()


def test_cwl_documents_and_directories_are_pushed(fd: Client, tmp_path: Path) -> None:
    greet = fd.push_workflow(CWL / "greet.cwl")
    assert greet["name"] == "greet" and greet["version"].startswith("cwl-")
    assert fd.push_workflow(CWL / "greet.cwl", workflow_type="cwl")["version"] == greet["version"]
    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    for name in ("sort-count.cwl", "sort.cwl", "count.cwl"):
        shutil.copy(CWL / name, pipeline / name)
    pushed = fd.push_workflow(
        pipeline, workflow_type="CWL", main="sort-count.cwl", name="counting", version="1"
    )
    assert (pushed["name"], pushed["version"]) == ("counting", "1")
    run = fd.create_run(f"greet@{greet['version']}", params={"name": "sdk"}, start=True)
    status: dict[str, Any] = run.wait(timeout=120)
    assert status["state"] == "succeeded", status
    # cwltool's File object keeps its shape; its location is the product's link
    greeting = status["outputs"]["cwl_output"]["greeting"]
    assert greeting["location"].startswith(f"/api/v1/runs/{run.id}/products/")
    assert "path" not in greeting and greeting["basename"] == "sdk.txt"
    with pytest.raises(InvalidRequest, match="workflow type"):
        fd.push_workflow(CWL / "greet.cwl", workflow_type="wdl")
