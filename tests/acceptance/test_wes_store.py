"""WES submissions store their CWL files once: the same attachments again (the same files
under the same names, the same main file) run the workflow version stored the first time,
without writing the files again; a changed file is a new version.  Each user has their own
versions, and a deleted version is stored anew.  A run whose submission was answered is
kept through a kill -9 of the server right after the answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.crashkit import base_env, serving, sign_up
from tests.helpers import FLOWDECK_CODE, LiveServer, param_server, register_and_login
from tests.wes_schema import check

WES = "/ga4gh/wes/v1"
CWL = Path(__file__).parents[1] / "data" / "cwl"
FILES = ("sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt")
DONE = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
JOB = {"text": {"class": "File", "path": "fruit.txt"}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with param_server(
        request,
        tmp_path_factory.mktemp("wes-store") / "data",
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
        **FLOWDECK_CODE,
    ) as server:
        yield server


def attachments(fruit: bytes | None = None) -> list[tuple[str, tuple[str, bytes]]]:
    files = {name: (CWL / name).read_bytes() for name in FILES}
    if fruit is not None:
        files["fruit.txt"] = fruit
    return [("workflow_attachment", (name, data)) for name, data in files.items()]


def submit(c: httpx.Client, fruit: bytes | None = None) -> str:
    data = {
        "workflow_url": "sort-count.cwl",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(JOB),
    }
    r = c.post(f"{WES}/runs", data=data, files=attachments(fruit))
    assert r.status_code == 200, r.text
    return str(check(r)["run_id"])


def finished(c: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (state := check(c.get(f"{WES}/runs/{run_id}/status"))["state"]) not in DONE:
        assert time.monotonic() < deadline, f"run {run_id} still {state}"
        time.sleep(0.2)
    log = check(c.get(f"{WES}/runs/{run_id}"))
    assert log["state"] == "COMPLETE", log
    return log


def sorted_output(c: httpx.Client, run_id: str) -> str:
    r = c.get(finished(c, run_id)["outputs"]["sorted"]["location"])
    assert r.status_code == 200, r.text
    return r.text


def workflow_of(c: httpx.Client, run_id: str) -> str:
    return str(c.get(f"/api/v1/runs/{run_id}").json()["workflow"])


def versions(c: httpx.Client) -> list[str]:
    items = c.get("/api/v1/workflows", params={"name": "sort-count"}).json()["items"]
    return sorted(str(w["ref"]) for w in items)


def test_the_same_attachments_run_one_stored_version_and_a_changed_file_makes_another(
    srv: LiveServer,
) -> None:
    with srv.client(register_and_login(srv, "storeann")) as ann:
        first, second = submit(ann), submit(ann)
        assert workflow_of(ann, first) == workflow_of(ann, second)
        assert versions(ann) == [workflow_of(ann, first)]
        assert sorted_output(ann, first) == sorted_output(ann, second) == "apple\nfig\npear\n"

        changed = submit(ann, fruit=b"plum\nkiwi\n")
        assert workflow_of(ann, changed) != workflow_of(ann, first)
        assert len(versions(ann)) == 2
        assert sorted_output(ann, changed) == "kiwi\nplum\n"
        # the first files again: the first version, with its own files
        again = submit(ann)
        assert workflow_of(ann, again) == workflow_of(ann, first)
        assert sorted_output(ann, again) == "apple\nfig\npear\n"

        # another user sending the same files stores and runs a version of their own
        with srv.client(register_and_login(srv, "storeben")) as ben:
            theirs = submit(ben)
            assert workflow_of(ben, theirs).startswith("storeben/")
            assert versions(ben) == [workflow_of(ben, theirs)]
            assert sorted_output(ben, theirs) == "apple\nfig\npear\n"
        assert versions(ann) == sorted([workflow_of(ann, first), workflow_of(ann, changed)])

        # once deleted, the same files are stored anew (not run from the deleted version)
        ref = workflow_of(ann, first).split("/", 1)[1]
        r = ann.delete(f"/api/v1/workflows/{ref}")
        assert r.status_code == 204, r.text
        assert versions(ann) == [workflow_of(ann, changed)]
        anew = submit(ann)
        assert workflow_of(ann, anew) == workflow_of(ann, first)
        assert sorted_output(ann, anew) == "apple\nfig\npear\n"


def test_a_name_flowdeck_keeps_for_itself_is_refused_every_time(srv: LiveServer) -> None:
    with srv.client(register_and_login(srv, "storecid")) as cid:
        submit(cid)  # the same files without it are stored
        for _ in range(2):
            data = {
                "workflow_url": "sort-count.cwl",
                "workflow_type": "CWL",
                "workflow_type_version": "v1.2",
                "workflow_params": json.dumps(JOB),
            }
            files = [*attachments(), ("workflow_attachment", ("flowdeck.json", b"{}"))]
            r = cid.post(f"{WES}/runs", data=data, files=files)
            assert r.status_code == 400, r.text
            assert "flowdeck.json" in check(r)["msg"]
        assert len(versions(cid)) == 1


def test_submissions_answered_before_a_kill_9_are_kept(tmp_path: Path) -> None:
    with serving(tmp_path, base_env(tmp_path / "data")) as server:
        token = sign_up(server, "wescrash")
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            # the first stores the files; the second finds them stored: killed right after
            # its answer, before the server could do anything else with it
            ids = [submit(c), submit(c)]
            server.crash()
            server.start()
            for run_id in ids:
                assert sorted_output(c, run_id) == "apple\nfig\npear\n"
            assert len({workflow_of(c, run_id) for run_id in ids}) == 1
