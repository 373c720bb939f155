"""Graphs across engines: a stored CWL workflow's output ports are typed workflow outputs
(a File is a file), so bindings join native and CWL nodes both ways (real server, real
cwltool)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.test_cwl_runs import API, CWL
from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login

NATIVE = [
    """
name: lines
version: "1"
inputs:
  words: {type: string}
outputs:
  text: {from: "${{ steps.write.outputs.text }}"}
steps:
  write:
    run: [sh, -c, 'printf "%s\\n" $0 > words.txt', "${{ inputs.words }}"]
    outputs:
      text: {path: words.txt}
""",
    """
name: shout
version: "1"
inputs:
  f: {type: file}
outputs:
  loud: {from: "${{ steps.up.outputs.loud }}"}
steps:
  up:
    run: [sh, -c, 'tr a-z A-Z < "$0"', "${{ inputs.f }}"]
    outputs:
      loud: {stdout: text}
""",
    """
name: gather
version: "1"
inputs:
  files: {type: array, items: file}
outputs:
  all: {from: "${{ steps.cat.outputs.all }}"}
steps:
  cat:
    run: [cat, "${{ inputs.files }}"]
    outputs:
      all: {stdout: text}
""",
    """
name: counts
version: "1"
inputs:
  n: {type: int}
steps:
  main:
    run: [echo, "${{ inputs.n }}"]
""",
]


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("cwlgraphs")
    settings = make_settings(root / "data", slots=4, stop_grace_s=1, **FLOWDECK_CODE)
    server: LiveServer
    with (
        live_server(settings) as server,
        server.client(register_and_login(server, "crosser")) as client,
    ):
        for text in NATIVE:
            r = client.post(
                f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
            )
            assert r.status_code in (200, 201), r.text
        r = client.post(
            f"{API}/workflows?name=sorter&version=1",
            content=(CWL / "sort.cwl").read_bytes(),
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code == 201, r.text
        r = client.post(
            f"{API}/workflows?name=copier&version=1",
            content=(CWL / "copy-listing.cwl").read_bytes(),
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code == 201, r.text
        yield client


def wait_graph(c: httpx.Client, graph_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        graph: dict[str, Any] = c.get(f"{API}/graphs/{graph_id}").json()
        if graph["state"] in {"succeeded", "failed", "cancelled", "killed"}:
            return graph
        assert time.monotonic() < deadline, graph
        time.sleep(0.1)


def test_a_native_file_goes_through_a_cwl_node_into_a_native_node(c: httpx.Client) -> None:
    spec = c.get(f"{API}/workflows/sorter@1").json()["spec"]
    assert spec["steps"]["cwl"]["outputs"]["sorted"]["type"] == "file"
    r = c.post(
        f"{API}/graphs",
        json={
            "name": "across",
            "nodes": {
                "words": {"workflow": "lines@1", "params": {"words": "pear fig apple"}},
                "sort": {"workflow": "sorter@1", "params": {"reverse": False}},
                "shout": {"workflow": "shout@1"},
            },
            "bindings": [
                {"from": "words.text", "to": "sort.text"},
                {"from": "sort.sorted", "to": "shout.f"},
            ],
            "submit": True,
        },
    )
    assert r.status_code == 201, r.text
    graph = wait_graph(c, r.json()["id"])
    by_name = {n["name"]: n for n in graph["nodes"]}
    assert graph["state"] == "succeeded", by_name
    assert by_name["shout"]["outputs"]["loud"] == "APPLE\nFIG\nPEAR"
    sorted_file = by_name["sort"]["outputs"]["sorted"]
    assert sorted_file["name"] == "sorted.txt"
    assert c.get(sorted_file["url"]).text == "apple\nfig\npear\n"


def test_a_cwl_file_array_given_by_a_job_document_feeds_a_native_array_input(
    c: httpx.Client,
) -> None:
    folder = {
        "class": "Directory",
        "basename": "in",
        "listing": [
            {"class": "File", "basename": "a.txt", "contents": "one\n"},
            {"class": "File", "basename": "b.txt", "contents": "two\n"},
        ],
    }
    r = c.post(
        f"{API}/graphs",
        json={
            "nodes": {
                "copy": {"workflow": "copier@1", "params": {"cwl_job": {"folder": folder}}},
                "gather": {"workflow": "gather@1"},
            },
            "bindings": [{"from": "copy.copies", "to": "gather.files"}],
            "submit": True,
        },
    )
    assert r.status_code == 201, r.text
    graph = wait_graph(c, r.json()["id"])
    by_name = {n["name"]: n for n in graph["nodes"]}
    assert graph["state"] == "succeeded", by_name
    assert by_name["gather"]["outputs"]["all"] == "one\ntwo"


def test_bindings_whose_types_do_not_match_are_refused_naming_both_ends(
    c: httpx.Client,
) -> None:
    before = c.get(f"{API}/graphs").json()["items"]
    r = c.post(
        f"{API}/graphs",
        json={
            "nodes": {
                "sort": {"workflow": "sorter@1", "params": {"reverse": True}},
                "n": {"workflow": "counts@1"},
                "words": {"workflow": "lines@1", "params": {"words": "a"}},
            },
            "bindings": [
                {"from": "sort.sorted", "to": "n.n"},
                {"from": "words.text", "to": "sort.reverse"},
            ],
            "submit": True,
        },
    )
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "sort.sorted → n.n: output sort.sorted is a file but input n.n is a int" in message
    assert (
        "words.text → sort.reverse: output words.text is a file but input sort.reverse is a bool"
        in message
    )
    assert c.get(f"{API}/graphs").json()["items"] == before
