"""Stored CWL workflows run with their CWL job document as sent, through flowdeck's own
API: every CWL type (records, unions, Any, arrays of arrays, named types), the files the
document names staged under their relative paths (real server, real cwltool)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from flowdeck.cli.main import app
from flowdeck.client import Client
from tests.acceptance.test_cwl_runs import API, CWL, wait
from tests.acceptance.test_wes import WES
from tests.helpers import (
    FLOWDECK_CODE,
    STRONG,
    LiveServer,
    live_server,
    make_settings,
    register_and_login,
)

JOB = {
    "sample": {"reads": {"class": "File", "location": "data/reads.txt"}, "label": "S1"},
    "choice": 7,
    "extra": {"word": "hi"},
    "matrix": [["x", "y"], ["z"]],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cwljobs")
    with live_server(make_settings(root / "data", stop_grace_s=1, **FLOWDECK_CODE)) as server:
        yield server


@pytest.fixture(scope="module")
def c(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "jobuser")) as client:
        yield client


@pytest.fixture(scope="module")
def report(c: httpx.Client) -> dict[str, object]:
    r = c.post(
        f"{API}/workflows?name=report",
        content=(CWL / "sample-report.cwl").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    wf: dict[str, object] = r.json()
    return wf


def test_a_workflow_with_any_type_is_stored_and_runs_its_job_document_as_sent(
    c: httpx.Client, report: dict[str, object]
) -> None:
    spec = report["spec"]
    assert isinstance(spec, dict)
    # records, unions, Any and arrays of arrays are given in the job document
    assert not {"sample", "choice", "extra", "matrix"} & set(spec["inputs"])
    assert {"cwl_job", "cwl_files"} <= set(spec["inputs"])
    ref = f"report@{report['version']}"
    run_id = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": JOB}}).json()["id"]
    # the file the document names is not staged yet: the start is refused, saying so
    r = c.post(f"{API}/runs/{run_id}/start")
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "cwl_job.sample.reads.location" in message and "'data/reads.txt'" in message
    r = c.put(
        f"{API}/runs/{run_id}/files/cwl_files",
        params={"filename": "data/reads.txt"},
        content=b"ACGT\n",
    )
    assert r.status_code == 201, r.text
    assert c.post(f"{API}/runs/{run_id}/start").status_code == 200
    run = wait(c, run_id)
    assert run["state"] == "succeeded", run
    outputs = run["outputs"]
    assert isinstance(outputs, dict)
    assert outputs["label"] == "S1"
    assert outputs["report"]["name"] == "report.txt", outputs
    products = {p["name"]: p for p in c.get(f"{API}/runs/{run_id}/products").json()}
    assert c.get(products["cwl.report[0]"]["url"]).text == "== S1 (7, hi)\nACGT\n"
    # the run shows the job document as sent
    assert run["cwl_job"] == JOB
    # a rerun runs it again with the same staged files
    again = wait(c, c.post(f"{API}/runs/{run_id}/rerun", json={}).json()["id"])
    assert again["state"] == "succeeded", again["error"]
    products = c.get(f"{API}/runs/{again['id']}/products").json()
    assert c.get(products[0]["url"]).text == "== S1 (7, hi)\nACGT\n"


def test_missing_job_only_inputs_are_named(c: httpx.Client, report: dict[str, object]) -> None:
    ref = f"report@{report['version']}"
    r = c.post(f"{API}/runs", json={"workflow": ref, "start": True})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "'sample'" in message and "cwl_job" in message
    assert "'matrix'" not in message  # it has a default


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        ("../etc/passwd", "'..'"),
        ("/etc/passwd", "absolute"),
        ("data/a\x07.txt", "control character"),
        ("data//a.txt", "empty"),
    ],
)
def test_staging_keys_are_safe_relative_paths(
    c: httpx.Client, report: dict[str, object], filename: str, words: str
) -> None:
    ref = f"report@{report['version']}"
    run_id = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": JOB}}).json()["id"]
    r = c.put(f"{API}/runs/{run_id}/files/cwl_files", params={"filename": filename}, content=b"x")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["details"]["field"] == "filename"
    assert c.get(f"{API}/runs/{run_id}/files").json() == []


def test_a_file_and_a_folder_of_the_same_name_are_refused(
    c: httpx.Client, report: dict[str, object]
) -> None:
    ref = f"report@{report['version']}"
    run_id = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": JOB}}).json()["id"]
    url = f"{API}/runs/{run_id}/files/cwl_files"
    assert c.put(url, params={"filename": "data"}, content=b"x").status_code == 201
    r = c.put(url, params={"filename": "data/reads.txt"}, content=b"x")
    assert r.status_code == 422
    assert "a file and a folder" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("job", "words"),
    [
        ({"sample": {"reads": {"class": "File", "location": "../x"}}}, "cwl_job.sample.reads"),
        ({"sample": {"reads": {"class": "File", "path": "/etc/passwd"}}}, "absolute path"),
        ({"a": {"class": "File", "location": "file:///etc/passwd"}}, "absolute path"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_job_documents_are_refused_saying_where(
    c: httpx.Client, report: dict[str, object], job: object, words: str
) -> None:
    ref = f"report@{report['version']}"
    before = c.get(f"{API}/runs", params={"limit": 500}).json()["items"]
    r = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": job}})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"]
    assert c.get(f"{API}/runs", params={"limit": 500}).json()["items"] == before


def test_typed_inputs_and_a_job_document_do_not_mix(c: httpx.Client) -> None:
    r = c.post(
        f"{API}/workflows?name=greet-mix",
        content=(CWL / "greet.cwl").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    ref = f"greet-mix@{r.json()['version']}"
    body = {"workflow": ref, "params": {"name": "a", "cwl_job": {"name": "b"}}, "start": True}
    r = c.post(f"{API}/runs", json=body)
    assert r.status_code == 422
    assert "not both" in r.json()["error"]["message"] and "name" in r.json()["error"]["message"]
    # a job document alone: the typed workflow runs it as sent
    body = {"workflow": ref, "params": {"cwl_job": json.dumps({"name": "doc"})}, "start": True}
    run = wait(c, c.post(f"{API}/runs", json=body).json()["id"])
    assert run["state"] == "succeeded", (run["error"], run["params"])
    products = c.get(f"{API}/runs/{run['id']}/products").json()
    assert c.get(products[0]["url"]).text == "Hello doc\n"
    assert "greeting" not in run["params"]  # the document gives every input
    # a rerun runs the same document
    r = c.post(f"{API}/runs/{run['id']}/rerun", json={})
    assert r.status_code == 201, r.text
    again = wait(c, r.json()["id"])
    assert again["state"] == "succeeded", again["error"]
    assert again["cwl_job"] == {"name": "doc"}


def test_a_wes_run_of_a_stored_workflow_takes_its_job_document_as_sent(
    c: httpx.Client, report: dict[str, object]
) -> None:
    data = {
        "workflow_url": f"report@{report['version']}",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(JOB),
    }
    files = [("workflow_attachment", ("data/reads.txt", b"TTTT\n"))]
    r = c.post(f"{WES}/runs", data=data, files=files)
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    run = wait(c, run_id)
    assert run["state"] == "succeeded", run["error"]
    log = c.get(f"{WES}/runs/{run_id}").json()
    assert log["request"]["workflow_params"] == JOB
    assert log["outputs"]["label"] == "S1"
    assert c.get(log["outputs"]["report"]["location"]).text == "== S1 (7, hi)\nTTTT\n"
    # a location that names no attachment is refused before anything is created
    data["workflow_params"] = json.dumps(
        {**JOB, "sample": {"reads": {"class": "File", "location": "nope.txt"}}}
    )
    r = c.post(f"{WES}/runs", data=data, files=files)
    assert r.status_code == 400
    assert "nope.txt" in r.json()["msg"]


def test_the_cli_and_the_sdk_send_a_local_job_document_with_its_files(
    srv: LiveServer,
    c: httpx.Client,
    report: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reads.txt").write_text("GGCC\n")
    (tmp_path / "job.yml").write_text(yaml.safe_dump(JOB))
    ref = f"report@{report['version']}"
    monkeypatch.setenv("FLOWDECK_URL", srv.url)
    runner = CliRunner()

    def cli(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})

    assert cli("login", "-u", "jobuser", input=STRONG + "\n").exit_code == 0
    # records, unions, Any and arrays of arrays: pushed from the CLI as from the API
    r = cli("workflow", "push", str(CWL / "sample-report.cwl"), "--name", "report-cli", "--json")
    assert r.exit_code == 0, r.output
    ref = f"report-cli@{json.loads(r.output)['version']}"
    r = cli("run", "submit", ref, "--cwl-job", str(tmp_path / "job.yml"), "--json")
    assert r.exit_code == 0, r.output
    run_id = json.loads(r.output)["id"]
    run = wait(c, run_id)
    assert run["state"] == "succeeded", run["error"]
    assert run["cwl_job"] == JOB  # the files' relative paths as the document wrote them
    staged = c.get(f"{API}/runs/{run_id}/files").json()
    assert [(f["input"], f["filename"]) for f in staged] == [("cwl_files", "data/reads.txt")]
    products = {p["name"]: p for p in c.get(f"{API}/runs/{run_id}/products").json()}
    assert c.get(products["cwl.report[0]"]["url"]).text == "== S1 (7, hi)\nGGCC\n"
    r = cli("run", "status", run_id)
    assert r.exit_code == 0, r.output
    assert "CWL job document (as sent):" in r.output and '"label": "S1"' in r.output
    assert r.output.count("cwl_job") == 0  # not repeated as a parameter (JSON text)
    r = cli("run", "submit", ref, "--cwl-job", str(tmp_path / "nope.yml"))
    assert r.exit_code != 0 and "nope.yml" in r.output
    # the SDK: a job document as a mapping, with a File literal (no file to stage)
    literal = {**JOB, "sample": {**JOB["sample"]}}  # type: ignore[dict-item]
    literal["sample"]["reads"] = {"class": "File", "basename": "r.txt", "contents": "LIT\n"}
    token = c.headers["authorization"].split()[1]
    with Client(srv.url, token=token) as sdk:
        sdk_run = sdk.create_run(ref, cwl_job=literal, start=True)
        assert wait(c, sdk_run.id)["state"] == "succeeded"
        sdk_run.status()
        assert sdk_run.cwl_job == literal
        from_file = sdk.create_run(ref, cwl_job=tmp_path / "job.yml", start=True)
        assert wait(c, from_file.id)["state"] == "succeeded"
    products = c.get(f"{API}/runs/{sdk_run.id}/products").json()
    assert c.get(products[0]["url"]).text == "== S1 (7, hi)\nLIT\n"


def test_a_directory_names_a_folder_of_staged_files(c: httpx.Client) -> None:
    r = c.post(
        f"{API}/workflows?name=copier",
        content=(CWL / "copy-listing.cwl").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    ref = f"copier@{r.json()['version']}"
    job = {"folder": {"class": "Directory", "location": "in"}}
    run_id = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": job}}).json()["id"]
    for name, text in (("in/a.txt", b"A\n"), ("in/b.txt", b"B\n")):
        r = c.put(f"{API}/runs/{run_id}/files/cwl_files", params={"filename": name}, content=text)
        assert r.status_code == 201, r.text
    assert c.post(f"{API}/runs/{run_id}/start").status_code == 200
    run = wait(c, run_id)
    assert run["state"] == "succeeded", run["error"]
    outputs = run["outputs"]
    assert isinstance(outputs, dict)
    assert [f["name"] for f in outputs["copies"]] == ["copy-a.txt", "copy-b.txt"]
    assert [c.get(f["url"]).text for f in outputs["copies"]] == ["A\n", "B\n"]
    assert c.get(outputs["names"]["url"]).text == "a.txt\nb.txt\n"
    # a Directory that names no staged folder is refused at start, saying where
    job = {"folder": {"class": "Directory", "location": "elsewhere"}}
    r = c.post(f"{API}/runs", json={"workflow": ref, "params": {"cwl_job": job}, "start": True})
    assert r.status_code == 422
    assert (
        "cwl_job.folder.location: 'elsewhere' is not a staged folder"
        in r.json()["error"]["message"]
    )


def test_a_wes_run_of_a_stored_workflow_without_attachments_takes_literals(
    c: httpx.Client, report: dict[str, object]
) -> None:
    job = {**JOB, "sample": {"label": "L", "reads": {"class": "File", "contents": "LIT\n"}}}
    data = {
        "workflow_url": f"report@{report['version']}",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(job),
    }
    r = c.post(f"{WES}/runs", data=data)
    assert r.status_code == 200, r.text
    run = wait(c, r.json()["run_id"])
    assert run["state"] == "succeeded", run["error"]
    assert run["cwl_job"] == job
    products = c.get(f"{API}/runs/{run['id']}/products").json()
    assert c.get(products[0]["url"]).text == "== L (7, hi)\nLIT\n"


def test_the_openapi_document_describes_the_job_document(c: httpx.Client) -> None:
    schema = c.get("/openapi.json").json()
    field = schema["components"]["schemas"]["RunOut"]["properties"]["cwl_job"]
    assert "job document as sent" in field["description"]
