"""CWL workflows through flowdeck's own API: pushed as a document or an archive, staged
and controlled like any run (real cwltool subprocesses)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.test_wes import _group_alive, _pgid_of_run
from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login

API = "/api/v1"
CWL = Path(__file__).parents[1] / "data" / "cwl"
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cwlruns")
    with live_server(make_settings(root / "data", stop_grace_s=1, **FLOWDECK_CODE)) as server:
        yield server


@pytest.fixture(scope="module")
def c(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "cwluser")) as client:
        yield client


def wait(c: httpx.Client, run_id: str, states: set[str] = TERMINAL) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while True:
        run: dict[str, object] = c.get(f"{API}/runs/{run_id}").json()
        if run["state"] in states:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']}"
        time.sleep(0.1)


def test_a_cwl_document_is_a_workflow_with_typed_inputs(c: httpx.Client) -> None:
    r = c.post(
        f"{API}/workflows?name=greet",
        content=(CWL / "greet.cwl").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    wf = r.json()
    assert wf["name"] == "greet"
    inputs = wf["spec"]["inputs"]
    assert inputs["name"]["type"] == "string"
    assert inputs["greeting"] == {"type": "string", "default": "Hello"} | {
        k: v for k, v in inputs["greeting"].items() if k not in ("type", "default")
    }
    r = c.post(
        f"{API}/runs",
        json={"workflow": f"greet@{wf['version']}", "params": {"name": "zed"}, "start": True},
    )
    assert r.status_code == 201, r.text
    run = wait(c, r.json()["id"])
    assert run["state"] == "succeeded", run
    products = c.get(f"{API}/runs/{run['id']}/products").json()
    assert [p["name"] for p in products] == ["cwl.greeting[0]"]
    assert c.get(products[0]["url"]).text == "Hello zed\n"
    r = c.post(
        f"{API}/runs",
        json={
            "workflow": f"greet@{wf['version']}",
            "params": {"name": "x"},
            "resources": {"executor": "inprocess"},
            "start": True,
        },
    )
    assert r.status_code == 422
    assert "local executor" in r.json()["error"]["message"]
    # a missing required input is refused like for any workflow
    r = c.post(f"{API}/runs", json={"workflow": f"greet@{wf['version']}", "start": True})
    assert r.status_code == 422
    assert "'name'" in r.json()["error"]["message"]


def test_an_archive_of_cwl_files_is_recognised_and_staged_like_any_run(c: httpx.Client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("sort-count.cwl", "sort.cwl", "count.cwl"):
            z.write(CWL / name, f"pipeline/{name}")
    r = c.post(
        f"{API}/workflows", content=buf.getvalue(), headers={"content-type": "application/zip"}
    )
    assert r.status_code == 201, r.text
    ref = f"{r.json()['name']}@{r.json()['version']}"
    assert r.json()["name"] == "sort-count"
    run_id = c.post(f"{API}/runs", json={"workflow": ref}).json()["id"]
    r = c.put(
        f"{API}/runs/{run_id}/files/text",
        params={"filename": "fruit.txt"},
        content=(CWL / "fruit.txt").read_bytes(),
    )
    assert r.status_code == 201, r.text
    assert c.patch(f"{API}/runs/{run_id}/params", json={"reverse": True}).status_code == 200
    assert c.post(f"{API}/runs/{run_id}/start").status_code == 200
    run = wait(c, run_id)
    assert run["state"] == "succeeded", run
    by_name = {p["name"]: p for p in c.get(f"{API}/runs/{run_id}/products").json()}
    assert c.get(by_name["cwl.sorted[0]"]["url"]).text == "pear\nfig\napple\n"


def test_inputs_of_other_cwl_types_are_given_in_a_job_document(c: httpx.Client) -> None:
    doc = (
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\n"
        "inputs:\n  pair:\n    type: {type: record, fields: {a: string}}\noutputs: []\n"
    )
    r = c.post(f"{API}/workflows", content=doc, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    ref = f"{r.json()['name']}@{r.json()['version']}"
    r = c.post(f"{API}/runs", json={"workflow": ref, "start": True})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "'pair'" in message and "record" in message and "cwl_job" in message


def test_pause_resume_and_kill_act_on_cwltool(c: httpx.Client) -> None:
    r = c.post(
        f"{API}/workflows",
        content=(CWL / "sleep.cwl").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    ref = f"{r.json()['name']}@{r.json()['version']}"
    run_id = c.post(
        f"{API}/runs", json={"workflow": ref, "params": {"seconds": 300}, "start": True}
    ).json()["id"]
    wait(c, run_id, {"running"})
    deadline = time.monotonic() + 60
    while (pgid := _pgid_of_run(run_id)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert c.post(f"{API}/runs/{run_id}/pause").json()["state"] == "paused"
    assert c.get(f"/ga4gh/wes/v1/runs/{run_id}/status").json()["state"] == "PAUSED"
    assert c.post(f"{API}/runs/{run_id}/resume").json()["state"] == "running"
    assert c.post(f"{API}/runs/{run_id}/kill").status_code == 200
    assert wait(c, run_id)["state"] == "killed"
    assert c.get(f"/ga4gh/wes/v1/runs/{run_id}/status").json()["state"] == "CANCELED"
    deadline = time.monotonic() + 30
    while _group_alive(pgid):
        assert time.monotonic() < deadline, "cwltool's process group outlived kill"
        time.sleep(0.1)
