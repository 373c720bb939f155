"""Runs on Dask: ``flowdeck serve`` as a real process with ``dask = true``, against a
scheduler and two workers of the module's own (tests/daskcluster.py), shared by every
test; the workers run as the step user, the data directory is one they reach.

A chain, a python scatter through the SDK, the step sandbox on the worker, a failure,
stop, drain (freeze refused), a step no worker can take (pending with the reason, chosen
with the CLI), secrets refused without TLS, the
executor enabled per user, a worker killed mid-task (retried), a scheduler restart, and
the server killed with SIGKILL while a task runs: the next server adopts it by its key,
and the step runs once."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowdeck.client import Client
from flowdeck.executors.dask_tasks import Files
from tests.clusterruns import (
    WAIT_S,
    api,
    cli_as,
    one_step,
    push,
    status,
    steps,
    submit_on,
    wait_state,
)
from tests.crashkit import Server, base_env, sign_up
from tests.daskcluster import DaskCluster, alive, dask_cluster
from tests.helpers import STRONG

DASK = {"executor": "dask"}
USER = "dasker"


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskCluster]:
    with dask_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def server(cluster: DaskCluster) -> Iterator[Server]:
    tmp = cluster.base / "flowdeck"  # (reached by the workers' user, unlike pytest's)
    tmp.mkdir(mode=0o755)
    gates = tmp / "gates"  # files the tests and the steps share
    gates.mkdir()
    gates.chmod(0o777)
    env = {
        **base_env(tmp / "data"),
        "FLOWDECK_DASK": "true",
        "FLOWDECK_DASK_SCHEDULER": cluster.address,
        "FLOWDECK_DASK_POLL_S": "0.3",
        "FLOWDECK_DASK_USERS": USER,
        "FLOWDECK_SANDBOX_EXTRA_RW": str(gates),
    }
    if cluster.user is not None:
        env["FLOWDECK_DASK_WORKER_USER"] = cluster.user
    srv = Server(tmp, env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return sign_up(server, USER)


def submit(server: Server, token: str, workflow: str, **body: Any) -> str:
    return submit_on("dask", server, token, workflow, **body)


def cli(server: Server, *args: str, ok: bool = True) -> str:
    return cli_as(USER, server, *args, ok=ok)


def files_of(server: Server, run_id: str, label: str = "main", attempt: int = 1) -> Files:
    logs = server.data_dir / "runs" / run_id / "logs"
    return Files.of(logs / f"{label}.{attempt}.stdout")


def wait_started(server: Server, run_id: str, label: str = "main", attempt: int = 1) -> int:
    """Until the step runs on a worker and wrote its first line: its process group."""
    files = files_of(server, run_id, label, attempt)
    stdout = files.base.with_name(f"{files.base.name}.stdout")
    deadline = time.monotonic() + WAIT_S
    while not (stdout.exists() and b"started" in stdout.read_bytes()):
        assert time.monotonic() < deadline, server.excerpt()
        time.sleep(0.1)
    return int(files.read("pid") or 0)


def counted(gates: Path, name: str, then: str = "") -> str:
    """A step that adds a line to ``gates/name`` each time it starts."""
    return f"[sh, -c, 'echo started; echo ran >> {gates / name}; {then}']"


def test_a_chain_runs_as_one_task_per_step(server: Server, token: str) -> None:
    chain = Path(__file__).parents[2] / "examples" / "chain" / "flowdeck.yaml"
    r = api(
        server,
        token,
        "POST",
        "/workflows",
        content=chain.read_text(),
        headers={"content-type": "text/yaml"},
    )
    assert r.status_code in (200, 201), r.text
    run_id = submit(server, token, "chain@1.0", params={"who": "dask"})
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", f"{done}\n{server.excerpt()}"
    assert done["outputs"] == {"shouted": "HELLO DASK", "length": 10}
    r = api(server, token, "GET", f"/runs/{run_id}/steps/shout/logs", params={"stream": "stdout"})
    assert r.text == "HELLO DASK"
    listed = steps(server, token, run_id)
    assert {label: s["dask_task"] for label, s in listed.items()} == {
        label: f"{run_id}/{label}/-1/1" for label in ("greet", "shout", "count")
    }


def test_a_python_scatter_through_the_sdk(server: Server, token: str, tmp_path: Path) -> None:
    """A foreach of a python step: one task per element, each element's return value as
    its outputs, gathered in order."""
    folder = tmp_path / "pyscatter"
    folder.mkdir()
    (folder / "flowdeck.yaml").write_text(
        'name: pyscatter\nversion: "1"\n'
        "inputs:\n  items: {type: array, items: int, default: [1, 2, 3, 4, 5, 6]}\n"
        "outputs:\n  all: {from: '${{ steps.square.outputs.value }}'}\n"
        "steps:\n  square:\n    foreach: ${{ inputs.items }}\n"
        "    python: squares:square\n    with: {x: '${{ item }}'}\n"
        "    outputs:\n      value: {return: value}\n"
    )
    (folder / "squares.py").write_text(
        "def square(x: int) -> dict:\n    print('squaring', x)\n    return {'value': x * x}\n"
    )
    with Client(server.url, token=token) as sdk:
        sdk.push_workflow(folder)
        run = sdk.create_run("pyscatter@1", resources=DASK, start=True)
        done = run.wait(timeout=WAIT_S)
        assert done["state"] == "succeeded", f"{done}\n{server.excerpt()}"
        assert done["outputs"] == {"all": [1, 4, 9, 16, 25, 36]}
        assert run.logs("square", index=2)[0] == b"squaring 3\n"
        assert len({s["dask_task"] for s in run.steps()}) == 6


def test_a_step_runs_in_its_sandbox_on_the_worker(server: Server, token: str) -> None:
    """The step sandbox applies on the worker (bubblewrap in a user namespace): the step
    sees its own folder, not what else the data directory holds (the database, the
    server's keys)."""
    data = server.data_dir
    assert (data / "flowdeck.db").exists()
    check = (
        f"[sh, -c, 'hostname; id -u; test -e {data / 'flowdeck.db'} && echo sees-db || "
        "echo no-db; echo mine > here.txt && cat here.txt']"
    )
    run_id = submit(server, token, push(server, token, "dboxed", one_step(check)))
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", f"{done}\n{server.excerpt()}"
    r = api(server, token, "GET", f"/runs/{run_id}/steps/main/logs", params={"stream": "stdout"})
    hostname, uid, db, mine = r.text.split()
    assert hostname == "flowdeck-step" and int(uid) != 0
    assert (db, mine) == ("no-db", "mine"), r.text


def test_a_failure_names_the_exit_code(server: Server, token: str) -> None:
    wf = push(server, token, "dfails", one_step("[sh, -c, 'echo broken >&2; exit 3']"))
    done = wait_state(server, token, submit(server, token, wf))
    assert done["state"] == "failed"
    assert "exit code 3" in done["error"]["message"], done
    r = api(
        server, token, "GET", f"/runs/{done['id']}/steps/main/logs", params={"stream": "stderr"}
    )
    assert r.text == "broken\n"


def test_stop_ends_the_step_on_its_worker(server: Server, token: str) -> None:
    wf = push(server, token, "dstop", one_step("[sh, -c, 'echo started; exec sleep 300']"))
    with Client(server.url, token=token) as sdk:
        run = sdk.create_run(wf, resources=DASK, start=True)
        group = wait_started(server, run.id)
        assert alive(group)
        assert run.logs("main")[0] == b"started\n"  # live, while it runs
        run.stop()
        done = run.wait(timeout=WAIT_S)
    assert done["state"] == "cancelled", done
    deadline = time.monotonic() + 30
    while alive(group):  # its process on the worker ended too
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_drain_submits_nothing_new_and_freeze_is_refused(server: Server, token: str) -> None:
    """A run on Dask cannot be frozen (409 saying so); drained, its running step ends as it
    would and the next is not submitted until the run resumes."""
    gates = server.tmp / "gates"
    gate = gates / "drain-gate"
    first = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    two = one_step(first) + "  then:\n    run: [sh, -c, 'echo next']\n    needs: [main]\n"
    run_id = submit(server, token, push(server, token, "ddrain", two))
    wait_started(server, run_id)
    r = api(server, token, "POST", f"/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 409 and "steps on Dask cannot be frozen" in r.text, r.text
    r = api(server, token, "POST", f"/runs/{run_id}/pause", json={"mode": "drain"})
    assert r.status_code == 200, r.text
    gate.touch()
    deadline = time.monotonic() + WAIT_S
    # (a drained run is paused at once; its running step goes on to its end)
    while (listed := steps(server, token, run_id))["main"]["state"] != "succeeded":
        assert time.monotonic() < deadline, listed
        time.sleep(0.1)
    time.sleep(1.0)  # polls of the executor after that end: nothing new is submitted
    assert status(server, token, run_id)["state"] == "paused"
    listed = steps(server, token, run_id)
    assert listed["then"]["state"] == "pending" and listed["then"]["attempts"] == 0
    assert not files_of(server, run_id, "then").path("job").exists()  # never submitted
    assert api(server, token, "POST", f"/runs/{run_id}/resume").status_code == 200
    assert wait_state(server, token, run_id)["state"] == "succeeded"


def test_a_step_no_worker_can_take_is_pending_with_the_reason(server: Server, token: str) -> None:
    """Chosen with the CLI: more memory than any worker offers; pending, with why (API
    and ``flowdeck run status``); a stop cancels it before it ever ran."""
    wf = push(
        server,
        token,
        "dhuge",
        one_step("[sh, -c, 'echo started']", "    resources: {memory: 64GiB}\n"),
    )
    r = api(server, token, "POST", "/runs", json={"workflow": wf})
    run_id = r.json()["id"]
    cli(server, "run", "resources", run_id, "--executor", "dask")
    cli(server, "run", "start", run_id)
    why = "no Dask worker offers cpus=1, memory=68719476736"
    deadline = time.monotonic() + WAIT_S
    while (main := steps(server, token, run_id).get("main", {})).get("dask_reason") != why:
        assert time.monotonic() < deadline, f"{main}\n{server.excerpt()}"
        time.sleep(0.1)
    assert main["state"] == "pending"
    assert why in cli(server, "run", "status", run_id)
    api(server, token, "POST", f"/runs/{run_id}/stop")
    assert wait_state(server, token, run_id)["state"] == "cancelled"
    assert files_of(server, run_id).read("pid") is None  # it never ran


def test_the_dashboard_starts_a_run_on_dask_and_shows_why_it_waits(
    server: Server, token: str
) -> None:
    """The new-run form offers dask to the users in dask_users only; a run started there on
    Dask shows its step's task key and why no worker takes it."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium)")
    wf = push(
        server, token, "dweb", one_step("[sh, -c, 'true']", "    resources: {memory: 64GiB}\n")
    )
    theirs = push(server, sign_up(server, "no-dask-web"), "dweb2", one_step("[sh, -c, 'true']"))
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True)
        try:

            def signed_in(user: str) -> Any:
                page = browser.new_context(base_url=server.url).new_page()
                page.set_default_timeout(30_000)
                page.goto("/login")
                page.get_by_label("Username").fill(user)
                page.get_by_label("Password").fill(STRONG)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url("**/")
                return page

            other = signed_in("no-dask-web")
            other.goto(f"/runs/new?workflow={theirs}")
            offered = other.get_by_label("Where it runs").locator("option").all_inner_texts()
            assert offered == ["local (the server's default)", "inprocess"], offered
            page = signed_in(USER)
            page.goto(f"/runs/new?workflow={wf}")
            page.get_by_label("Where it runs").select_option("dask")
            page.get_by_role("button", name="Create and start").click()
            page.wait_for_url(re.compile(r".*/runs/run_[0-9a-z]+$"))
            run_id = page.url.rsplit("/", 1)[1]
            row = page.locator('[data-step-row="main"]')
            why = "no Dask worker offers cpus=1, memory=68719476736"
            playwright.expect(row.locator(".dask-reason")).to_have_text(" " + why)
            playwright.expect(row.locator(".dask-task")).to_contain_text(" Dask task ")
            assert status(server, token, run_id)["resources"]["executor"] == "dask"
        finally:
            browser.close()
    api(server, token, "POST", f"/runs/{run_id}/stop")
    assert wait_state(server, token, run_id)["state"] == "cancelled"


def test_secrets_need_tls_and_the_admin_enables_the_executor(server: Server, token: str) -> None:
    secret = "    secrets:\n      - {name: grid_token, env: TOKEN}\n"
    wf = push(server, token, "dsecret", one_step("[sh, -c, 'true']", secret))
    r = api(server, token, "POST", "/runs", json={"workflow": wf, "start": True, "resources": DASK})
    assert r.status_code == 422, r.text
    assert "secrets go to Dask workers only over TLS" in r.text
    other = sign_up(server, "not-a-dasker")
    plain = push(server, other, "dplain", one_step("[sh, -c, 'true']"))
    r = api(server, other, "POST", "/runs", json={"workflow": plain, "resources": DASK})
    assert r.status_code == 403, r.text
    assert "the dask executor is not enabled for user 'not-a-dasker'" in r.text


def test_a_worker_killed_mid_task_is_retried(
    server: Server, token: str, cluster: DaskCluster
) -> None:
    gates = server.tmp / "gates"
    wf = push(
        server,
        token,
        "dvictim",
        one_step(counted(gates, "victim", "sleep 300"), "    retries: 1\n"),
    )
    run_id = submit(server, token, wf)
    group = wait_started(server, run_id)
    leader = next(
        name
        for name, proc in cluster.procs.items()
        if name != "scheduler" and _in_group(proc.pid, group)
    )
    cluster.kill(leader)
    try:
        wait_started(server, run_id, attempt=2)  # attempt 2, on the other worker
    finally:
        cluster.start_worker(leader)
        cluster.wait_workers(len(cluster.names))
    api(server, token, "POST", f"/runs/{run_id}/kill")
    done = wait_state(server, token, run_id)
    main = steps(server, token, run_id)["main"]
    assert main["attempts"] == 2, (done, main)
    assert (gates / "victim").read_text() == "ran\nran\n"


def _in_group(leader: int, pid: int) -> bool:
    """Is ``pid``'s parent (the worker that runs it) in ``leader``'s process group?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    try:
        return os.getpgid(parent) == leader
    except ProcessLookupError:
        return False


def test_a_scheduler_restart_runs_each_step_once(
    server: Server, token: str, cluster: DaskCluster
) -> None:
    gates = server.tmp / "gates"
    wf = push(server, token, "dthrough", one_step(counted(gates, "through", "sleep 2")))
    run_id = submit(server, token, wf)
    wait_started(server, run_id)
    cluster.restart_scheduler()
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", f"{done}\n{server.excerpt()}"
    assert (gates / "through").read_text() == "ran\n"
    after = submit(server, token, push(server, token, "dafter", one_step("[sh, -c, 'true']")))
    assert wait_state(server, token, after)["state"] == "succeeded"


def test_a_server_killed_while_a_task_runs(server: Server, token: str) -> None:
    """SIGKILL the server while a step runs on a worker: the task goes on, the next server
    adopts it by its key, and the step ran once, with its real exit."""
    gates = server.tmp / "gates"
    gate = gates / "open"
    wait_gate = f"while [ ! -e {gate} ]; do sleep 0.1; done; exit 4"
    wf = push(server, token, "dlive", one_step(counted(gates, "live", wait_gate)))
    run_id = submit(server, token, wf)
    wait_started(server, run_id)
    server.crash()
    server.start()
    assert status(server, token, run_id)["state"] == "running"
    gate.touch()
    done = wait_state(server, token, run_id)
    assert done["state"] == "failed" and "exit code 4" in done["error"]["message"], done
    assert steps(server, token, run_id)["main"]["attempts"] == 1
    assert (gates / "live").read_text() == "ran\n"
