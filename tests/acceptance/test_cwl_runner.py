"""``flowdeck-cwl-runner`` against a live server: CWL jobs reach cwltool as sent (every
type and field, files under their relative names), outputs come back into --outdir, and
cwltool's exit codes come back too."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login

RUNNER = Path(__file__).parents[1] / "data" / "cwl" / "runner"
WES = "/ga4gh/wes/v1"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cwlrunner")
    with live_server(make_settings(root / "data", **FLOWDECK_CODE)) as server:
        yield server


@pytest.fixture(scope="module")
def token(srv: LiveServer) -> str:
    return register_and_login(srv, "cwlrunner")


RUNNER_COMMAND = [sys.executable, "-m", "flowdeck.cli.cwl_runner"]  # flowdeck-cwl-runner
FLOWDECK_COMMAND = [sys.executable, "-m", "flowdeck", "cwl-runner"]


def runner(
    srv: LiveServer, token: str, outdir: Path, *args: str, command: list[str] = RUNNER_COMMAND
) -> tuple[int, Any, str]:
    env = {**os.environ, "FLOWDECK_URL": srv.url, "FLOWDECK_TOKEN": token}
    done = subprocess.run(
        [*command, f"--outdir={outdir}", *args],
        cwd=RUNNER,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = json.loads(done.stdout) if done.returncode == 0 else None
    return done.returncode, out, done.stderr


def test_every_cwl_type_and_same_named_files_reach_cwltool(
    srv: LiveServer, token: str, tmp_path: Path
) -> None:
    code, out, err = runner(srv, token, tmp_path, "cat-all.cwl", "job.yml")
    assert code == 0, err
    # File[] with one file twice and two files named same.txt in different folders
    assert (tmp_path / "joined.txt").read_text() == "first\nsecond\nfirst\n"
    listing = (tmp_path / "listing.txt").read_text()
    assert "one.txt" in listing and "two.txt" in listing  # the Directory, sent as its files
    # Any, a record, an array of arrays, float defaults (0.00001, 1.23e5), a File literal
    # default, and a field the tool does not declare (ignored, as cwltool does)
    assert out["echo"] == [{"any": [1, "two"]}, "L", 3, 1e-05, 123000]
    assert out["joined"]["location"] == (tmp_path / "joined.txt").as_uri()
    assert out["joined"]["path"] == str(tmp_path / "joined.txt")


def test_directory_outputs_and_their_files_come_back(
    srv: LiveServer, token: str, tmp_path: Path
) -> None:
    code, out, err = runner(srv, token, tmp_path, "--quiet", "make-dir.cwl")
    assert code == 0, err
    assert (tmp_path / "out" / "top.txt").read_text() == "top\n"
    assert (tmp_path / "out" / "inner" / "deep.txt").read_text() == "in\n"
    assert out["out"]["location"] == (tmp_path / "out").as_uri()
    assert (tmp_path / "with#hash.txt").read_text() == "x\n"  # --relax-path-checks
    # the WES run log: every File, in listings too, at a URL ending in its name
    with srv.client(token) as c:
        run_id = c.get(f"{WES}/runs").json()["runs"][0]["run_id"]
        outputs = c.get(f"{WES}/runs/{run_id}").json()["outputs"]
        top, inner = outputs["out"]["listing"]
        assert top["location"].endswith("/top.txt")
        assert inner["listing"][0]["location"].endswith("/deep.txt")
        assert c.get(inner["listing"][0]["location"]).text == "in\n"
        assert outputs["hashed"]["location"].endswith("/with%23hash.txt")
        assert "path" not in top
        # a Directory's location: a zip of its files, at a URL ending in its name
        assert outputs["out"]["location"].endswith("/directories/out/out")
        got = c.get(outputs["out"]["location"])
        assert got.status_code == 200, got.text
        with zipfile.ZipFile(io.BytesIO(got.content)) as z:
            assert sorted(z.namelist()) == ["inner/deep.txt", "top.txt"]
            assert z.read("inner/deep.txt") == b"in\n"
        assert inner["location"].endswith("/directories/out/listing/1/inner")
        with zipfile.ZipFile(io.BytesIO(c.get(inner["location"]).content)) as z:
            assert z.namelist() == ["deep.txt"]
        missing = c.get(f"{WES}/runs/{run_id}/directories/hashed/with%23hash.txt")
        assert missing.status_code == 404


def test_two_outputs_of_one_file_both_come_back(
    srv: LiveServer, token: str, tmp_path: Path
) -> None:
    code, out, err = runner(srv, token, tmp_path, "twice.cwl")
    assert code == 0, err
    # as cwltool reports it: one file, at one place, for both
    assert out["a"]["path"] == out["b"]["path"] == str(tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "once\n"


@pytest.mark.parametrize("command", [RUNNER_COMMAND, FLOWDECK_COMMAND])
def test_one_process_of_a_packed_document(
    srv: LiveServer, token: str, tmp_path: Path, command: list[str]
) -> None:
    code, out, err = runner(
        srv, token, tmp_path, "packed.cwl#main", "packed-job.yml", command=command
    )
    assert code == 0, err
    assert (tmp_path / "said.txt").read_text() == "hi\n"
    assert out["said"]["basename"] == "said.txt"


def test_an_unsupported_requirement_is_cwltools_exit_33(
    srv: LiveServer, token: str, tmp_path: Path
) -> None:
    code, _, err = runner(srv, token, tmp_path, "unsupported.cwl")
    assert code == 33, err
    assert "DockerRequirement" in err


def submit(c: httpx.Client, url: str, names: list[str], params: dict[str, Any]) -> httpx.Response:
    files = [("workflow_attachment", (n, (RUNNER / n).read_bytes())) for n in names]
    data = {
        "workflow_url": url,
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(params),
    }
    return c.post(f"{WES}/runs", data=data, files=files)


def test_the_run_log_request_is_the_job_as_sent(srv: LiveServer, token: str) -> None:
    params = {
        "word": "as sent",
        "extra": {"kept": [1.5, None]},
        "file": {"class": "File", "path": "/home/me/./packed.cwl", "format": "x:y"},
    }
    with srv.client(token) as c:
        r = submit(c, "./packed.cwl#main", ["packed.cwl"], params)
        assert r.status_code == 200, r.text
        log = c.get(f"{WES}/runs/{r.json()['run_id']}").json()
        assert log["request"]["workflow_params"] == params


@pytest.mark.parametrize(
    "location", ["../a/same.txt", "/etc/passwd", "a/\x01same.txt", "c/missing.txt"]
)
def test_a_location_that_is_no_attachment_is_refused(
    srv: LiveServer, token: str, location: str
) -> None:
    job = {"files": [{"class": "File", "location": location}], "folder": "x"}
    with srv.client(token) as c:
        r = submit(c, "cat-all.cwl", ["cat-all.cwl", "a/same.txt"], job)
        assert r.status_code == 400, r.text
        assert repr(location) in r.json()["msg"]
