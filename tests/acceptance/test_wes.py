"""GA4GH WES 1.1 through HTTP: CWL runs with real cwltool subprocesses; every response is
validated against the WES OpenAPI document."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login
from tests.wes_schema import check

WES = "/ga4gh/wes/v1"
CWL = Path(__file__).parents[1] / "data" / "cwl"
DONE = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("wes")
    (root / "shared").mkdir()
    (root / "shared" / "veg.txt").write_text("leek\ncarrot\n")
    settings = make_settings(
        root / "data",
        stop_grace_s=1,
        data_root=root / "shared",
        login_max_failures_per_address=10**6,
        **FLOWDECK_CODE,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def alice(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "wesalice")) as client:
        yield client


def submit(
    c: httpx.Client,
    url: str,
    attach: list[str],
    params: dict[str, Any],
    **extra: str,
) -> httpx.Response:
    files = [("workflow_attachment", (n, (CWL / n).read_bytes())) for n in attach]
    data = {
        "workflow_url": url,
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(params),
        **extra,
    }
    return c.post(f"{WES}/runs", data=data, files=files)


def start(c: httpx.Client, url: str, attach: list[str], params: dict[str, Any]) -> str:
    r = submit(c, url, attach, params)
    assert r.status_code == 200, r.text
    return str(check(r)["run_id"])


def wait(c: httpx.Client, run_id: str, states: set[str] = DONE, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = str(check(c.get(f"{WES}/runs/{run_id}/status"))["state"])
        if state in states:
            return state
        assert time.monotonic() < deadline, f"run {run_id} still {state}"
        time.sleep(0.2)


def fetch(c: httpx.Client, url: str) -> str:
    r = c.get(url)
    assert r.status_code == 200, r.text
    return r.text


def test_two_step_workflow_runs_and_its_outputs_are_products(alice: httpx.Client) -> None:
    run_id = start(
        alice,
        "sort-count.cwl",
        ["sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt"],
        {"text": {"class": "File", "location": "/home/someone/data/fruit.txt"}},
    )
    assert wait(alice, run_id) == "COMPLETE"
    log = check(alice.get(f"{WES}/runs/{run_id}"))
    assert log["request"]["workflow_type"] == "CWL"
    assert log["request"]["workflow_url"] == "sort-count.cwl"
    assert fetch(alice, log["outputs"]["sorted"]["location"]) == "apple\nfig\npear\n"
    assert fetch(alice, log["outputs"]["count"]["location"]).strip() == "3"
    # the same run through flowdeck's own API: products of a normal run
    products = alice.get(f"/api/v1/runs/{run_id}/products").json()
    assert sorted(p["name"] for p in products) == ["cwl.files[0]", "cwl.files[1]"]
    for port in ("sorted", "count"):  # a location ends in the file's name
        output = log["outputs"][port]
        assert output["location"].endswith(f"/{output['basename']}")
    # task logs: one per CWL step, as cwltool reported them
    assert log["task_logs_url"].endswith(f"{WES}/runs/{run_id}/tasks")
    tasks = check(alice.get(log["task_logs_url"]))
    assert [t["name"] for t in tasks["task_logs"]] == ["sort", "count_lines"]
    assert tasks["task_logs"][0]["cmd"][0] == "sort"
    assert all(t["exit_code"] == 0 for t in tasks["task_logs"])
    one = check(alice.get(f"{WES}/runs/{run_id}/tasks/{tasks['task_logs'][1]['id']}"))
    assert one["name"] == "count_lines"
    page = check(alice.get(f"{WES}/runs/{run_id}/tasks", params={"page_size": 1}))
    assert len(page["task_logs"]) == 1 and page["next_page_token"]
    page2 = check(
        alice.get(
            f"{WES}/runs/{run_id}/tasks",
            params={"page_size": 1, "page_token": page["next_page_token"]},
        )
    )
    assert page2["task_logs"][0]["name"] == "count_lines" and page2["next_page_token"] == ""
    assert "completed success" in fetch(alice, log["run_log"]["stderr"])


def test_scatter_workflow_makes_one_product_per_element(alice: httpx.Client) -> None:
    run_id = start(alice, "scatter.cwl", ["scatter.cwl", "greet.cwl"], {"names": ["ada", "bob"]})
    assert wait(alice, run_id) == "COMPLETE"
    log = check(alice.get(f"{WES}/runs/{run_id}"))
    greetings = log["outputs"]["greetings"]
    assert [g["basename"] for g in greetings] == ["ada.txt", "bob.txt"]
    assert [fetch(alice, g["location"]) for g in greetings] == ["Hello ada\n", "Hello bob\n"]
    tasks = check(alice.get(f"{WES}/runs/{run_id}/tasks"))["task_logs"]
    assert sorted(t["name"] for t in tasks) == ["greet", "greet_2"]


def test_input_from_the_data_root_and_engine_parameters(
    alice: httpx.Client, srv: LiveServer
) -> None:
    root = srv.settings.data_root
    assert root is not None
    run_id = start(
        alice,
        "sort-count.cwl",
        ["sort-count.cwl", "sort.cwl", "count.cwl"],
        {"text": {"class": "File", "path": str(root / "veg.txt")}, "reverse": True},
    )
    assert wait(alice, run_id) == "COMPLETE"
    log = check(alice.get(f"{WES}/runs/{run_id}"))
    assert fetch(alice, log["outputs"]["sorted"]["location"]) == "leek\ncarrot\n"
    r = submit(
        alice,
        "sort-count.cwl",
        ["sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt"],
        {"text": {"class": "File", "location": "fruit.txt"}},
        workflow_engine_parameters=json.dumps({"--on-error": "continue", "--timestamps": "true"}),
    )
    assert wait(alice, check(r)["run_id"]) == "COMPLETE"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workflow_type": "WDL"}, "workflow_type"),
        ({"workflow_type_version": "v9"}, "workflow_type_version"),
        ({"workflow_url": "https://example.org/x.cwl"}, "does not fetch"),
        ({"workflow_params": "[1]"}, "JSON object"),
        (
            {"workflow_params": json.dumps({"text": {"class": "File", "path": "/etc/passwd"}})},
            "not an attachment",
        ),
        ({"workflow_engine_parameters": json.dumps({"--parallel": ""})}, "not allowed"),
    ],
)
def test_bad_submissions_are_wes_errors_and_create_nothing(
    alice: httpx.Client, change: dict[str, str], message: str
) -> None:
    before = alice.get("/api/v1/runs", params={"limit": 500}).json()["items"]
    data = {
        "workflow_url": "sort-count.cwl",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps({"text": {"class": "File", "path": "fruit.txt"}}),
        **change,
    }
    files = [
        ("workflow_attachment", (n, (CWL / n).read_bytes()))
        for n in ("sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt")
    ]
    r = alice.post(f"{WES}/runs", data=data, files=files)
    assert r.status_code == 400, r.text
    assert message in check(r)["msg"]
    after = alice.get("/api/v1/runs", params={"limit": 500}).json()["items"]
    assert len(after) == len(before)


def test_unsafe_attachment_names_are_refused(alice: httpx.Client) -> None:
    for name in ("../evil.cwl", "/abs.cwl", "a/../../b.cwl"):
        files = [("workflow_attachment", (name, b"cwlVersion: v1.2\n"))]
        data = {"workflow_url": name, "workflow_type": "CWL", "workflow_type_version": "v1.2"}
        r = alice.post(f"{WES}/runs", data=data, files=files)
        assert r.status_code == 400, r.text
        assert "safe relative" in check(r)["msg"]


def test_a_failing_tool_is_an_executor_error_with_its_exit_code(alice: httpx.Client) -> None:
    run_id = start(alice, "fail.cwl", ["fail.cwl"], {"status": 3})
    assert wait(alice, run_id) == "EXECUTOR_ERROR"
    log = check(alice.get(f"{WES}/runs/{run_id}"))
    assert log["run_log"]["system_logs"], log
    (task,) = check(alice.get(f"{WES}/runs/{run_id}/tasks"))["task_logs"]
    assert task["exit_code"] == 3
    assert task["cmd"][:2] == ["sh", "-c"]
    assert "failing" in fetch(alice, task["stderr"])


def _pgid_of_run(run_id: str) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"FLOWDECK_RUN_ID={run_id}".encode() in environ.split(b"\0"):
            return os.getpgid(int(pid))
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_leaves_no_process_behind(alice: httpx.Client) -> None:
    run_id = start(alice, "sleep.cwl", ["sleep.cwl"], {"seconds": 300})
    deadline = time.monotonic() + 60
    while not check(alice.get(f"{WES}/runs/{run_id}/tasks"))["task_logs"]:
        assert time.monotonic() < deadline, "cwltool never started the sleep job"
        time.sleep(0.2)
    pgid = _pgid_of_run(run_id)
    assert pgid is not None and _group_alive(pgid)
    assert check(alice.post(f"{WES}/runs/{run_id}/cancel")) == {"run_id": run_id}
    assert wait(alice, run_id) == "CANCELED"
    deadline = time.monotonic() + 30
    while _group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still alive"
        time.sleep(0.2)


def test_a_second_user_sees_none_of_the_first_users_runs(
    srv: LiveServer, alice: httpx.Client
) -> None:
    run_id = start(alice, "scatter.cwl", ["scatter.cwl", "greet.cwl"], {"names": ["x"]})
    with srv.client(register_and_login(srv, "wesbob")) as bob:
        listed = check(bob.get(f"{WES}/runs"))
        assert listed["runs"] == []
        for path in ("", "/status", "/tasks", "/tasks/1"):
            r = bob.get(f"{WES}/runs/{run_id}{path}")
            assert r.status_code == 404
            assert check(r)["status_code"] == 404
        r = bob.post(f"{WES}/runs/{run_id}/cancel")
        assert r.status_code == 404
        check(r)
        info = check(bob.get(f"{WES}/service-info"))
        assert sum(info["system_state_counts"].values()) == 0
    wait(alice, run_id)
    ids = [r["run_id"] for r in check(alice.get(f"{WES}/runs"))["runs"]]
    assert run_id in ids


def test_without_a_token_is_a_wes_401(srv: LiveServer) -> None:
    with srv.client() as anon:
        r = anon.get(f"{WES}/runs")
        assert r.status_code == 401
        assert check(r)["status_code"] == 401


def test_service_info_and_a_stable_run_listing(srv: LiveServer) -> None:
    with srv.client(register_and_login(srv, "wescarol")) as c:
        spec = 'name: hello\nversion: "1"\nsteps:\n  main:\n    run: [echo, hi]\n'
        r = c.post("/api/v1/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code == 201, r.text
        data = {
            "workflow_url": "hello@1",
            "workflow_type": "FLOWDECK",
            "workflow_type_version": "1",
        }
        made = [check(c.post(f"{WES}/runs", data=data))["run_id"] for _ in range(5)]
        for run_id in made:
            wait(c, run_id)
        info = check(c.get(f"{WES}/service-info"))
        assert info["system_state_counts"]["COMPLETE"] == 5
        assert "CWL" in info["workflow_type_versions"]
        first = check(c.get(f"{WES}/runs", params={"page_size": 2}))
        assert len(first["runs"]) == 2 and first["next_page_token"]
        late = check(c.post(f"{WES}/runs", data=data))["run_id"]  # after the snapshot
        seen = [r["run_id"] for r in first["runs"]]
        token = first["next_page_token"]
        while token:
            page = check(c.get(f"{WES}/runs", params={"page_size": 2, "page_token": token}))
            seen += [r["run_id"] for r in page["runs"]]
            token = page["next_page_token"]
        assert seen == list(reversed(made))
        assert late not in seen
        assert check(c.get(f"{WES}/runs"))["runs"][0]["run_id"] == late
        tasks = check(c.get(f"{WES}/runs/{made[0]}/tasks"))["task_logs"]
        assert [t["name"] for t in tasks] == ["main"]
        log = check(c.get(f"{WES}/runs/{made[0]}"))
        assert fetch(c, log["run_log"]["stdout"]) == fetch(c, tasks[0]["stdout"]) == "hi\n"
        r = c.get(f"{WES}/runs", params={"page_token": "garbage"})
        assert r.status_code == 400
        check(r)


def test_a_flowdeck_workflow_s_file_outputs_are_download_urls(srv: LiveServer) -> None:
    """Not server paths: a WES client fetches each output file by its URL, which ends in the
    file's name; other values are as they are."""
    with srv.client(register_and_login(srv, "wesfiona")) as c:
        spec = (
            'name: report\nversion: "1"\noutputs:\n'
            '  report: {from: "${{ steps.w.outputs.f }}"}\n'
            '  words: {from: "${{ steps.w.outputs.n }}"}\n'
            "steps:\n  w:\n    run: [sh, -c, 'echo hello > report.txt; echo 2']\n"
            "    outputs:\n      f: {path: report.txt}\n      n: {stdout: json}\n"
        )
        r = c.post("/api/v1/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code == 201, r.text
        data = {
            "workflow_url": "report@1",
            "workflow_type": "FLOWDECK",
            "workflow_type_version": "1",
        }
        run_id = check(c.post(f"{WES}/runs", data=data))["run_id"]
        assert wait(c, run_id) == "COMPLETE"
        outputs = check(c.get(f"{WES}/runs/{run_id}"))["outputs"]
        assert outputs["words"] == 2
        assert outputs["report"].startswith(f"{srv.url}{WES}/runs/{run_id}/products/")
        assert outputs["report"].endswith("/report.txt")
        assert fetch(c, outputs["report"]) == "hello\n"


def test_log_and_output_urls_are_wes_urls_with_wes_credentials(
    srv: LiveServer, alice: httpx.Client
) -> None:
    """The run log's and the task logs' stdout/stderr and the outputs' locations are under
    the WES prefix: a bearer token or Basic with the token as the password reads them; another
    user gets a WES 404, no credentials a WES 401; the /api/v1 URLs still answer."""
    run_id = start(
        alice,
        "sort-count.cwl",
        ["sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt"],
        {"text": {"class": "File", "location": "fruit.txt"}},
    )
    assert wait(alice, run_id) == "COMPLETE"
    log = check(alice.get(f"{WES}/runs/{run_id}"))
    tasks = check(alice.get(f"{WES}/runs/{run_id}/tasks"))["task_logs"]
    under = f"{srv.url}{WES}/runs/{run_id}/"
    sorted_url = log["outputs"]["sorted"]["location"]
    logs = [log["run_log"]["stdout"], log["run_log"]["stderr"], tasks[0]["stderr"]]
    urls = [*logs, sorted_url, log["outputs"]["count"]["location"]]
    assert all(u.startswith(under) for u in urls), urls
    token = alice.headers["authorization"].removeprefix("Bearer ")
    with httpx.Client(auth=("wesalice", token), timeout=30) as basic:
        texts = [fetch(basic, u) for u in urls]
    assert [fetch(alice, u) for u in urls] == texts
    assert "completed success" in texts[1] and texts[2] == texts[1]
    assert texts[3] == "apple\nfig\npear\n" and texts[4].strip() == "3"
    # the same files through flowdeck's own API
    api = f"/api/v1/runs/{run_id}"
    assert fetch(alice, f"{api}/steps/cwl/logs?stream=stderr") == texts[1]
    product = sorted_url.split("/")[-2]  # .../products/<id>/<file name>
    assert fetch(alice, f"{api}/products/{product}") == texts[3]
    r = alice.get(sorted_url, headers={"Range": "bytes=0-4"})
    assert r.status_code == 206 and r.text == "apple"
    with srv.client(register_and_login(srv, "wesdave")) as dave, srv.client() as anon:
        for url in urls:
            r = dave.get(url)
            assert r.status_code == 404, r.text
            assert r.json()["status_code"] == 404 and r.json()["msg"]
            r = anon.get(url)
            assert r.status_code == 401, r.text
            assert r.json()["status_code"] == 401
    missing = alice.get(f"{WES}/runs/{run_id}/products/nope")
    assert missing.status_code == 404 and missing.json()["status_code"] == 404
    bad = alice.get(f"{WES}/runs/{run_id}/steps/cwl/logs", params={"stream": "stdin"})
    assert bad.status_code == 400 and bad.json()["status_code"] == 400


def test_list_tasks_never_answers_400(alice: httpx.Client) -> None:
    """WES 1.1 declares no 400 for ListTasks: odd page sizes are the default page, a token
    this server did not give is past the end."""
    run_id = start(alice, "scatter.cwl", ["scatter.cwl", "greet.cwl"], {"names": ["ada", "bo"]})
    assert wait(alice, run_id) == "COMPLETE"
    url = f"{WES}/runs/{run_id}/tasks"
    every = check(alice.get(url))["task_logs"]
    assert len(every) == 2
    for size in ("0", "-5", "many", "1.5", str(10**30)):
        page = check(alice.get(url, params={"page_size": size}))
        assert page == {"task_logs": every, "next_page_token": ""}, size
    for token in ("garbage", "-1", "9" * 100, "2"):
        page = check(alice.get(url, params={"page_token": token}))
        assert page == {"task_logs": [], "next_page_token": ""}, token


def test_run_log_of_a_foreach_step_names_its_instance(srv: LiveServer) -> None:
    with srv.client(register_and_login(srv, "weserin")) as c:
        spec = (
            'name: each\nversion: "1"\ninputs:\n  names: {type: array, items: string}\n'
            "steps:\n  greet:\n    foreach: ${{ inputs.names }}\n"
            "    run: [echo, '${{ item }}']\n"
        )
        r = c.post("/api/v1/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code == 201, r.text
        data = {
            "workflow_url": "each@1",
            "workflow_type": "FLOWDECK",
            "workflow_type_version": "1",
            "workflow_params": json.dumps({"names": ["ada", "bob"]}),
        }
        run_id = check(c.post(f"{WES}/runs", data=data))["run_id"]
        assert wait(c, run_id) == "COMPLETE"
        log = check(c.get(f"{WES}/runs/{run_id}"))
        assert fetch(c, log["run_log"]["stdout"]) == "ada\n"
        tasks = check(c.get(f"{WES}/runs/{run_id}/tasks"))["task_logs"]
        assert sorted(fetch(c, t["stdout"]) for t in tasks) == ["ada\n", "bob\n"]
