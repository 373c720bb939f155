"""The run lifecycle through HTTP with real subprocesses."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.crashkit import run_processes
from tests.helpers import (
    STRONG,
    TERMINAL,
    LiveServer,
    live_server,
    make_settings,
    register_and_login,
    wait_ended,
)

API = "/api/v1"
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("runs")
    (root / "shared").mkdir()
    (root / "shared" / "genome.txt").write_text("c\na\nb\n")
    (root / "marks").mkdir()  # written by a step outside its folder (sandbox_extra_rw)
    settings = make_settings(
        root / "data",
        sandbox_extra_rw=[root / "marks"],
        stop_grace_s=1,
        data_root=root / "shared",
        login_max_failures_per_address=10**6,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "runner")) as client:
        for name in ("chain", "fanout", "files"):
            spec = (EXAMPLES / name / "flowdeck.yaml").read_text()
            r = client.post(
                f"{API}/workflows", content=spec, headers={"content-type": "application/yaml"}
            )
            assert r.status_code in (200, 201), r.text
        yield client


def push(c: httpx.Client, text: str) -> None:
    r = c.post(f"{API}/workflows", content=text, headers={"content-type": "application/yaml"})
    assert r.status_code in (200, 201), r.text


def one_step(name: str, run: str, extra: str = "") -> str:
    return f'name: {name}\nversion: "1"\nsteps:\n  main:\n    run: {run}\n' + extra


def wait(
    c: httpx.Client, run_id: str, states: set[str] = TERMINAL, timeout: float = 30
) -> dict[str, Any]:
    return wait_ended(c, run_id, states, timeout)


def submit(c: httpx.Client, workflow: str, **body: Any) -> str:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "start": True, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def steps(c: httpx.Client, run_id: str) -> dict[str, dict[str, Any]]:
    return {s["label"]: s for s in c.get(f"{API}/runs/{run_id}/steps").json()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_success_with_outputs_events_and_times(user: httpx.Client) -> None:
    run_id = submit(user, "chain@1.0", params={"who": "flowdeck"})
    status = wait(user, run_id)
    assert status["state"] == "succeeded"
    assert status["outputs"] == {"shouted": "HELLO FLOWDECK", "length": 14}
    assert status["steps"] == {"succeeded": 3}
    assert status["progress"] == {"done": 3, "total": 3, "fraction": 1.0}
    assert 0 < status["running_s"] < 30
    types = [e["type"] for e in user.get(f"{API}/runs/{run_id}/events").json()]
    assert types[:3] == ["run.staged", "run.queued", "run.running"]
    assert types[-1] == "run.succeeded" and types.count("step.succeeded") == 3
    seqs = [e["seq"] for e in user.get(f"{API}/runs/{run_id}/events").json()]
    assert seqs == list(range(1, len(seqs) + 1))


def test_failure_names_the_step_and_exit_code(user: httpx.Client) -> None:
    push(user, one_step("fails", "[sh, -c, 'echo broken >&2; exit 3']"))
    run_id = submit(user, "fails@1")
    status = wait(user, run_id)
    assert status["state"] == "failed"
    assert status["error"]["step"] == "main" and "exit code 3" in status["error"]["message"]
    assert "broken" in status["error"]["message"]
    main = steps(user, run_id)["main"]
    assert main["state"] == "failed" and main["exit_code"] == 3 and "broken" in main["log_tail"]
    r = user.get(f"{API}/runs/{run_id}/steps/main/logs", params={"stream": "stderr"})
    assert r.text == "broken\n" and r.headers["x-next-offset"] == "7"


def test_a_failed_steps_error_carries_the_end_of_its_stderr(user: httpx.Client) -> None:
    """The last 20 lines of standard error, not only the last one: the line that says why
    (here, a full disk) is seldom the very last."""
    script = (
        "for i in $(seq 1 30); do echo line $i >&2; done; "
        "echo 'write error: No space left on device' >&2; "
        "for i in 1 2 3; do echo cleanup $i >&2; done; exit 1"
    )
    push(user, one_step("noisy", f'[sh, -c, "{script}"]'))
    status = wait(user, submit(user, "noisy@1"))
    message = status["error"]["message"]
    assert message.startswith("exit code 1")
    lines = message.splitlines()[1:]
    assert len(lines) == 20 and lines[-1] == "cleanup 3" and lines[0] == "line 15"
    assert "No space left on device" in message
    assert steps(user, status["id"])["main"]["error"] == message


def test_a_dead_supervisors_attempt_is_killed_before_its_retry(
    srv: LiveServer, user: httpx.Client
) -> None:
    """kill -9 of the step supervisor (not the server) while a step runs: the attempt is
    lost and retried, and the retry never runs beside it (a lock each attempt holds while
    it runs would see the overlap)."""
    marks = srv.settings.sandbox_extra_rw[0]
    body = (
        f"umask 0; exec 9>>{marks}/lock; flock -n 9 || echo overlap >> {marks}/overlaps; "
        f"echo $FLOWDECK_ATTEMPT >> {marks}/attempts; "
        f"if [ $FLOWDECK_ATTEMPT = 1 ]; then sleep 30; else echo done > {marks}/retried; fi"
    )
    push(user, one_step("sup", json.dumps(["sh", "-c", body]), "    retries: 1\n"))
    run_id = submit(user, "sup@1")
    deadline = time.monotonic() + 20
    while not (marks / "attempts").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    data = srv.settings.data_dir
    found = subprocess.run(
        ["pgrep", "-f", f"supervisor --socket {data}"], capture_output=True, text=True
    ).stdout.split()
    os.kill(int(found[0]), signal.SIGKILL)
    status = wait(user, run_id)
    assert status["state"] == "succeeded", status
    assert (marks / "attempts").read_text().split() == ["1", "2"]
    assert not (marks / "overlaps").exists()
    main = steps(user, run_id)["main"]
    assert main["attempts"] == 2


def test_timeout(user: httpx.Client) -> None:
    push(user, one_step("slow", "[sleep, '30']", "    resources: {timeout: 0.5}\n"))
    status = wait(user, submit(user, "slow@1"))
    assert status["state"] == "failed" and "timed out" in status["error"]["message"]
    assert steps(user, status["id"])["main"]["state"] == "timed_out"


def test_retry_then_success(user: httpx.Client) -> None:
    script = (
        '[sh, -c, \'if [ -e "$TMPDIR/once" ]; then echo ok; '
        'else touch "$TMPDIR/once"; exit 1; fi\']'
    )
    push(user, one_step("flaky", script, "    retries: {count: 2, backoff: 0.1}\n"))
    run_id = submit(user, "flaky@1")
    status = wait(user, run_id)
    assert status["state"] == "succeeded"
    assert steps(user, run_id)["main"]["attempts"] == 2
    types = [e["type"] for e in user.get(f"{API}/runs/{run_id}/events").json()]
    assert types.count("step.failed") == 1 and types.count("step.running") == 2


def test_scatter_over_five_items(user: httpx.Client) -> None:
    run_id = submit(user, "fanout@1.0")
    status = wait(user, run_id)
    assert status["state"] == "succeeded"
    assert status["outputs"]["sentence"] == "ALPHA BETA GAMMA DELTA EPSILON"
    found = steps(user, run_id)
    assert [found[f"upper[{i}]"]["item"] for i in range(5)] == [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
    ]


def test_foreach_limit_runs_so_many_instances_at_once(user: httpx.Client) -> None:
    """foreach_limit 2 over five elements: by the run's events, never three running."""
    push(
        user,
        'name: limited\nversion: "1"\ninputs:\n  n: {type: array, items: int, '
        "default: [1, 2, 3, 4, 5]}\nsteps:\n  each:\n    foreach: ${{ inputs.n }}\n"
        "    foreach_limit: 2\n    run: [sleep, '0.2']\n",
    )
    run_id = submit(user, "limited@1")
    assert wait(user, run_id)["state"] == "succeeded"
    running, most = 0, 0
    for e in user.get(f"{API}/runs/{run_id}/events").json():
        if e["type"] == "step.running":
            running += 1
            most = max(most, running)
        elif e["type"] == "step.succeeded" and e["data"].get("index", -1) >= 0:
            running -= 1
    assert most == 2, most
    assert steps(user, run_id)["each[4]"]["state"] == "succeeded"


TICKER = "[sh, -c, 'while true; do echo x >> \"$TMPDIR/ticks\"; sleep 0.05; done']"


def ticks(srv: LiveServer, run_id: str) -> int:
    path = srv.settings.data_dir / "runs" / run_id / "tmp" / "ticks"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_freeze_stops_progress_and_resume_continues(srv: LiveServer, user: httpx.Client) -> None:
    push(user, one_step("ticker", TICKER))
    run_id = submit(user, "ticker@1")
    wait(user, run_id, {"running"})
    deadline = time.monotonic() + 10
    while ticks(srv, run_id) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = user.post(f"{API}/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 200 and r.json()["state"] == "paused"
    time.sleep(0.2)
    frozen = ticks(srv, run_id)
    time.sleep(0.6)
    assert ticks(srv, run_id) == frozen  # no progress while frozen
    assert steps(user, run_id)["main"]["state"] == "paused"
    paused_status = user.get(f"{API}/runs/{run_id}").json()
    assert paused_status["paused_s"] >= 0.7
    assert user.post(f"{API}/runs/{run_id}/resume").json()["state"] == "running"
    time.sleep(0.5)
    assert ticks(srv, run_id) > frozen
    status = user.get(f"{API}/runs/{run_id}").json()
    wall = time.time() - _ts(status["started_at"])
    assert status["running_s"] <= wall - 0.7  # paused time is not running time
    assert user.post(f"{API}/runs/{run_id}/stop", json={"grace_s": 1}).status_code == 200
    assert wait(user, run_id)["state"] == "cancelled"


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_drain_lets_running_steps_finish_and_starts_nothing(user: httpx.Client) -> None:
    push(
        user,
        'name: drain\nversion: "1"\nsteps:\n'
        "  first: {run: [sleep, '0.8']}\n  second: {run: ['true'], needs: [first]}\n",
    )
    run_id = submit(user, "drain@1")
    wait(user, run_id, {"running"})
    time.sleep(0.2)
    assert (
        user.post(f"{API}/runs/{run_id}/pause", json={"mode": "drain"}).json()["state"] == "paused"
    )
    time.sleep(1.2)
    found = steps(user, run_id)
    assert found["first"]["state"] == "succeeded" and found["second"]["state"] == "pending"
    assert user.get(f"{API}/runs/{run_id}").json()["state"] == "paused"
    user.post(f"{API}/runs/{run_id}/resume")
    assert wait(user, run_id)["state"] == "succeeded"


GRANDCHILD = (
    '[sh, -c, \'sleep 1000 & echo $! > "$TMPDIR/child"; echo $$ > "$TMPDIR/leader"; wait\']'
)


def _pids(srv: LiveServer, run_id: str) -> list[int]:
    """The run's processes, as the host sees them (a sandboxed step has pids of its own)."""
    tmp = srv.settings.data_dir / "runs" / run_id / "tmp"
    deadline = time.monotonic() + 10
    while not ((tmp / "child").exists() and (tmp / "leader").exists()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.05)
    found = sorted(run_processes({run_id}))
    assert len(found) >= 2, found  # the step's shell and its sleep (bwrap's too)
    return found


def _all_gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_leaves_no_process_and_keeps_products(srv: LiveServer, user: httpx.Client) -> None:
    push(user, one_step("stopme", GRANDCHILD))
    run_id = submit(user, "stopme@1")
    pids = _pids(srv, run_id)
    r = user.post(f"{API}/runs/{run_id}/stop", json={"grace_s": 1})
    assert r.json()["state"] == "stopping"
    assert wait(user, run_id)["state"] == "cancelled"
    assert _all_gone(pids)
    assert (srv.settings.data_dir / "runs" / run_id / "work").exists()


def test_kill_leaves_no_process_and_no_work_directory(srv: LiveServer, user: httpx.Client) -> None:
    push(user, one_step("killme", GRANDCHILD))
    run_id = submit(user, "killme@1")
    pids = _pids(srv, run_id)
    assert user.post(f"{API}/runs/{run_id}/kill").json()["state"] == "killed"
    assert _all_gone(pids)
    rundir = srv.settings.data_dir / "runs" / run_id
    deadline = time.monotonic() + 5
    leftovers = ["work", "tmp", "inputs"]
    while any((rundir / d).exists() for d in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d for d in leftovers if (rundir / d).exists()] == []
    assert (rundir / "logs").exists()  # record, events and logs stay
    assert user.get(f"{API}/runs/{run_id}").json()["state"] == "killed"
    assert wait(user, run_id)["state"] == "killed"


KILLABLE = """name: killable
version: "1"
inputs:
  text: {type: file}
steps:
  a:
    run: [sleep, "60"]
  b:
    run: [sh, -c, 'trap "" TERM; sleep 60']
  after:
    needs: [a, b]
    run: [cat, "${{ inputs.text }}"]
"""


def test_a_killed_run_ends_after_its_steps_and_forgets_deleted_files(
    user: httpx.Client,
) -> None:
    """The run's final event comes after every step event (a follower that stops at the
    run's final event sees every step end), and the staged files whose bytes the kill
    deleted are no longer listed."""
    push(user, KILLABLE)
    run_id = user.post(f"{API}/runs", json={"workflow": "killable@1"}).json()["id"]
    r = user.put(f"{API}/runs/{run_id}/files/text", params={"filename": "t.txt"}, content=b"x")
    assert r.status_code in (200, 201), r.text
    assert [f["filename"] for f in user.get(f"{API}/runs/{run_id}/files").json()] == ["t.txt"]
    assert user.post(f"{API}/runs/{run_id}/start").status_code == 200
    deadline = time.monotonic() + 20
    while {s["label"]: s["state"] for s in user.get(f"{API}/runs/{run_id}/steps").json()} != {
        "a": "running",
        "b": "running",
        "after": "pending",
    }:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert user.post(f"{API}/runs/{run_id}/kill").json()["state"] == "killed"
    events = user.get(f"{API}/runs/{run_id}/events").json()
    types = [e["type"] for e in events]
    assert types[-1] == "run.killed"
    killed = {e["data"]["step"] for e in events if e["type"] == "step.killed"}
    assert killed == {"a", "b", "after"}
    assert user.get(f"{API}/runs/{run_id}/files").json() == []
    time.sleep(0.5)  # the processes are gone by now: nothing more is said of the run
    assert [e["type"] for e in user.get(f"{API}/runs/{run_id}/events").json()] == types
    states = {s["label"]: s["state"] for s in user.get(f"{API}/runs/{run_id}/steps").json()}
    assert states == {"a": "killed", "b": "killed", "after": "killed"}
    # a staged run killed before it started forgets its files too
    staged = user.post(f"{API}/runs", json={"workflow": "killable@1"}).json()["id"]
    user.put(f"{API}/runs/{staged}/files/text", params={"filename": "t.txt"}, content=b"x")
    assert user.post(f"{API}/runs/{staged}/kill").json()["state"] == "killed"
    assert user.get(f"{API}/runs/{staged}/files").json() == []


def test_illegal_actions_are_409_with_the_state(user: httpx.Client) -> None:
    run_id = submit(user, "chain@1.0")
    wait(user, run_id)
    r = user.post(f"{API}/runs/{run_id}/pause")
    assert r.status_code == 409
    assert r.json()["error"]["details"]["state"] == "succeeded"
    assert user.post(f"{API}/runs/{run_id}/start").status_code == 409
    table = httpx.get(f"{user.base_url}{API}/schema/run-states").json()
    assert {
        "name": "pause",
        "action": "pause",
        "from": ["running"],
        "to": "paused",
        "by": "user",
    } in table["rules"]


def test_staging_errors_name_the_input(user: httpx.Client) -> None:
    r = user.post(f"{API}/runs", json={"workflow": "files@1.0"})
    assert r.status_code == 404  # a workflow of another name does not exist
    run = user.post(f"{API}/runs", json={"workflow": "sort-lines@1.0"}).json()
    run_id = run["id"]
    assert run["state"] == "staged"
    r = user.patch(f"{API}/runs/{run_id}/params", json={"reverse": "yes"})
    assert r.status_code == 422 and r.json()["error"]["details"]["input"] == "reverse"
    assert "input 'reverse': expected true or false" in r.json()["error"]["message"]
    r = user.patch(f"{API}/runs/{run_id}/params", json={"revers": True})
    assert r.status_code == 422 and "did you mean 'reverse'" in r.json()["error"]["message"]
    r = user.patch(f"{API}/runs/{run_id}/params", json={"text": "a.txt"})
    assert r.status_code == 422 and "stage it with PUT" in r.json()["error"]["message"]
    r = user.put(f"{API}/runs/{run_id}/files/reverse", params={"filename": "x"}, content=b"x")
    assert r.status_code == 422 and "not a file" in r.json()["error"]["message"]
    problems = user.post(f"{API}/runs/{run_id}/validate").json()
    assert problems["ok"] is False and problems["problems"][0]["input"] == "text"
    r = user.post(f"{API}/runs/{run_id}/start")
    assert r.status_code == 422 and "required input 'text'" in r.json()["error"]["message"]
    r = user.put(f"{API}/runs/{run_id}/resources", json={"cpus": 10_000})
    assert r.status_code == 422 and "cpus" in r.json()["error"]["message"]
    assert user.get(f"{API}/runs/{run_id}").json()["params"] == {}  # nothing changed


def check_ranges(user: httpx.Client, url: str, data: bytes) -> None:
    """Range requests as RFC 9110 says: a satisfiable range is 206, an unsatisfiable one
    416 with Content-Range and the JSON error; an invalid Range header is ignored (200)."""
    size = len(data)
    for value, part in [
        ("bytes=0-4", data[0:5]),
        ("bytes=-5", data[-5:]),
        (f"bytes={size - 3}-", data[-3:]),
        (f"bytes=2-{size + 100}", data[2:]),
        (f"bytes=0-2, {size + 5}-", data[0:3]),  # the satisfiable part of the set
    ]:
        r = user.get(url, headers={"Range": value})
        assert r.status_code == 206 and r.content == part, value
    for value in ["bytes=5-1", "bytes=abc", "bytes=", "bytes=1-2,5-1", "bytes=--1", "items=0-5"]:
        r = user.get(url, headers={"Range": value})
        assert r.status_code == 200 and r.content == data, (value, r.status_code, r.text[:200])
    for value in [f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"]:
        r = user.get(url, headers={"Range": value})
        assert r.status_code == 416, (value, r.status_code)
        assert r.headers["content-range"] == f"bytes */{size}"
        err = r.json()["error"]
        assert err["code"] == "range_not_satisfiable" and err["details"]["size"] == size
    r = user.get(url, headers={"Range": f"bytes={size}-", "If-Range": '"another-etag"'})
    assert r.status_code == 200 and r.content == data  # If-Range does not match: all of it


def test_files_in_products_out(srv: LiveServer, user: httpx.Client) -> None:
    run_id = user.post(f"{API}/runs", json={"workflow": "sort-lines@1.0"}).json()["id"]
    data = "".join(f"line {i:05d}\n" for i in range(5000, 0, -1)).encode()
    r = user.put(f"{API}/runs/{run_id}/files/text", params={"filename": "in.txt"}, content=data)
    assert r.status_code == 201 and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    user.patch(f"{API}/runs/{run_id}/params", json={"reverse": True})
    assert user.post(f"{API}/runs/{run_id}/validate").json() == {"ok": True, "problems": []}
    assert user.post(f"{API}/runs/{run_id}/start").json()["state"] == "queued"
    status = wait(user, run_id)
    assert status["state"] == "succeeded", status
    assert status["outputs"]["lines"] == 5000
    products = {p["name"]: p for p in user.get(f"{API}/runs/{run_id}/products").json()}
    sorted_bytes = b"".join(sorted(data.splitlines(keepends=True)))
    got = user.get(products["sort.sorted"]["url"])
    assert got.content == sorted_bytes
    assert got.headers["content-disposition"].startswith("attachment")
    assert products["sort.sorted"]["sha256"] == hashlib.sha256(sorted_bytes).hexdigest()
    part = user.get(products["sort.sorted"]["url"], headers={"Range": "bytes=11-21"})
    assert part.status_code == 206 and part.content == sorted_bytes[11:22]
    rev = user.get(products["reverse.reversed"]["url"]).content
    assert rev == b"".join(sorted(data.splitlines(keepends=True), reverse=True))
    archive = zipfile.ZipFile(io.BytesIO(user.get(f"{API}/runs/{run_id}/products.zip").content))
    assert archive.read("sorted.txt") == sorted_bytes

    check_ranges(user, products["sort.sorted"]["url"], sorted_bytes)

    # a later run takes a snapshot of this product: deleting the source cannot break it
    second = user.post(f"{API}/runs", json={"workflow": "sort-lines@1.0"}).json()["id"]
    r = user.post(
        f"{API}/runs/{second}/files/text/reference",
        json={"run": run_id, "product": "reverse.reversed"},
    )
    assert r.status_code == 201, r.text
    assert user.delete(f"{API}/runs/{run_id}").status_code == 204
    assert not (srv.settings.data_dir / "runs" / run_id).exists()
    user.post(f"{API}/runs/{second}/start")
    assert wait(user, second)["outputs"]["lines"] == 5000

    # a file under the admin's data root is read in place
    third = user.post(f"{API}/runs", json={"workflow": "sort-lines@1.0"}).json()["id"]
    r = user.post(f"{API}/runs/{third}/files/text/reference", json={"data_path": "genome.txt"})
    assert r.status_code == 201 and r.json()["source"] == "data_root"
    r = user.post(f"{API}/runs/{third}/files/text/reference", json={"data_path": "../etc"})
    assert r.status_code == 404
    user.post(f"{API}/runs/{third}/start")
    assert wait(user, third)["outputs"]["lines"] == 3


def test_every_run_route_is_404_to_another_user(srv: LiveServer, user: httpx.Client) -> None:
    run_id = user.post(f"{API}/runs", json={"workflow": "chain@1.0"}).json()["id"]
    with srv.client(register_and_login(srv, "nosy-neighbour")) as other:
        _all_404(other, user, run_id)


def _all_404(other: httpx.Client, user: httpx.Client, run_id: str) -> None:
    routes = [
        ("GET", f"/runs/{run_id}"),
        ("GET", f"/runs/{run_id}/steps"),
        ("GET", f"/runs/{run_id}/events"),
        ("GET", f"/runs/{run_id}/files"),
        ("GET", f"/runs/{run_id}/products"),
        ("GET", f"/runs/{run_id}/products.zip"),
        ("GET", f"/runs/{run_id}/products/prod_x"),
        ("GET", f"/runs/{run_id}/steps/greet/logs"),
        ("PATCH", f"/runs/{run_id}/params"),
        ("PUT", f"/runs/{run_id}/resources"),
        ("POST", f"/runs/{run_id}/validate"),
        ("POST", f"/runs/{run_id}/start"),
        ("POST", f"/runs/{run_id}/pause"),
        ("POST", f"/runs/{run_id}/resume"),
        ("POST", f"/runs/{run_id}/stop"),
        ("POST", f"/runs/{run_id}/kill"),
        ("DELETE", f"/runs/{run_id}"),
        ("PUT", f"/runs/{run_id}/files/who?filename=a"),
        ("POST", f"/runs/{run_id}/files/who/reference"),
        ("DELETE", f"/runs/{run_id}/files/who?filename=a"),
    ]
    for method, path in routes:
        kwargs: dict[str, Any] = {"json": {}} if method in ("PATCH", "PUT", "POST") else {}
        if "/files/who?" in path and method == "PUT":
            kwargs = {"content": b"x"}
        r = other.request(method, API + path, **kwargs)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert other.get(f"{API}/runs").json()["items"] == []
    assert user.get(f"{API}/runs/{run_id}").json()["state"] == "staged"  # nothing changed


def test_list_filters_and_pages(user: httpx.Client) -> None:
    ids = [
        user.post(f"{API}/runs", json={"workflow": "chain@1.0", "tags": ["batch7"]}).json()["id"]
        for _ in range(3)
    ]
    page = user.get(f"{API}/runs", params={"tag": "batch7", "limit": 2}).json()
    assert [r["id"] for r in page["items"]] == ids[::-1][:2]
    rest = user.get(f"{API}/runs", params={"tag": "batch7", "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["items"]] == [ids[0]]
    oldest = user.get(f"{API}/runs", params={"tag": "batch7", "sort": "created"}).json()
    assert oldest["items"][0]["id"] == ids[0]
    staged = user.get(f"{API}/runs", params={"state": "staged", "workflow": "chain"}).json()
    assert set(ids) <= {r["id"] for r in staged["items"]}
    assert user.get(f"{API}/runs", params={"state": "bogus"}).status_code == 422


def test_in_server_executor_runs_trusted_python(srv: LiveServer, user: httpx.Client) -> None:
    folder = EXAMPLES / "wordcount"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in ("flowdeck.yaml", "wordcount.py"):
            zf.write(folder / f, f)
    r = user.post(
        f"{API}/workflows", content=buf.getvalue(), headers={"content-type": "application/zip"}
    )
    assert r.status_code in (200, 201), r.text
    ref = r.json()["ref"]
    run_id = user.post(
        f"{API}/runs", json={"workflow": "wordcount@1.0", "resources": {"executor": "inprocess"}}
    ).json()["id"]
    user.put(
        f"{API}/runs/{run_id}/files/text",
        params={"filename": "t.txt"},
        content=b"the cat and the hat and the bat",
    )
    problems = user.post(f"{API}/runs/{run_id}/validate").json()["problems"]
    assert "trusted workflows only" in problems[0]["message"]
    admin_name = "root-runs"
    srv.ctx.accounts.create_user(admin_name, STRONG, admin=True)
    with srv.client(srv.ctx.accounts.login(admin_name, STRONG).secret) as admin:
        r = admin.put(f"{API}/workflows/{ref}/trusted", json={"trusted": True})
        assert r.status_code == 200
    assert user.post(f"{API}/runs/{run_id}/start").status_code == 200
    status = wait(user, run_id)
    assert status["state"] == "succeeded", status
    assert status["outputs"]["total"] == 8
    assert status["outputs"]["common"][0] == {"word": "the", "count": 3}
    # the same with a process per step; a failed create-and-start leaves nothing behind
    before = len(user.get(f"{API}/runs", params={"workflow": "wordcount"}).json()["items"])
    r = user.post(f"{API}/runs", json={"workflow": "wordcount@1.0", "start": True})
    assert r.status_code == 422 and "required input 'text'" in r.text
    after = user.get(f"{API}/runs", params={"workflow": "wordcount"}).json()["items"]
    assert len(after) == before
    local = user.post(f"{API}/runs", json={"workflow": "wordcount@1.0"}).json()["id"]
    user.put(
        f"{API}/runs/{local}/files/text",
        params={"filename": "t.txt"},
        content=b"the cat and the hat and the bat",
    )
    user.post(f"{API}/runs/{local}/start")
    assert wait(user, local)["outputs"] == status["outputs"]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _sleeper(run_id: str) -> int | None:
    for pid in run_processes({run_id}):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                return pid
    return None


@pytest.mark.parametrize("recorded", ["paused", "running"])
def test_after_a_crash_processes_match_the_recorded_pause_state(
    tmp_path: Path, recorded: str
) -> None:
    """The signals of a pause (SIGSTOP) or a resume (SIGCONT) go out before the change is
    committed; a crash in between leaves processes and record apart.  A restart makes the
    processes what the record says: stopped for a run recorded paused, running else."""
    settings = make_settings(tmp_path / "data")
    spec = 'name: pausable\nversion: "1"\nsteps:\n  s: {run: [sh, -c, "exec sleep 8"]}\n'

    with (
        live_server(settings) as server,
        server.client(register_and_login(server, f"pz{recorded}")) as c,
    ):
        push(c, spec)
        run_id = submit(c, "pausable@1")
        deadline = time.monotonic() + 10
        while not (pid := _sleeper(run_id)):  # as the host sees it (the sandbox has its pids)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        group = os.getpgid(pid)
        if recorded == "paused":
            assert c.post(f"{API}/runs/{run_id}/pause", json={"mode": "freeze"}).status_code == 200
            assert _state(pid) == "T"
            os.killpg(group, signal.SIGCONT)  # a resume's signal, its commit lost to a crash
        else:
            os.killpg(group, signal.SIGSTOP)  # a pause's signal, its commit lost to a crash
    with (
        live_server(settings) as server,
        server.client(server.ctx.accounts.login(f"pz{recorded}", STRONG).secret) as c,
    ):
        deadline = time.monotonic() + 10
        want = "T" if recorded == "paused" else "S"
        while _state(pid) != want:
            assert time.monotonic() < deadline, _state(pid)
            time.sleep(0.02)
        assert c.get(f"{API}/runs/{run_id}").json()["state"] == recorded
        if recorded == "paused":
            assert steps(c, run_id)["s"]["state"] == "paused"
            c.post(f"{API}/runs/{run_id}/resume")
        assert wait(c, run_id)["state"] == "succeeded"


def test_a_restart_re_adopts_running_steps_and_runs_each_once(tmp_path: Path) -> None:
    (tmp_path / "marks").mkdir()
    settings = make_settings(tmp_path / "data", sandbox_extra_rw=[tmp_path / "marks"])
    count = tmp_path / "marks" / "starts"
    spec = (
        'name: survivor\nversion: "1"\nsteps:\n'
        f"  first: {{run: [sh, -c, 'umask 0; echo first >> {count}; sleep 1.5; echo one > out'],"
        " outputs: {o: {path: out}}}\n"
        f"  second: {{run: [sh, -c, 'umask 0; echo second >> {count}; cat ../first/out'],"
        " needs: [first],"
        " outputs: {text: {stdout: text}}}\n"
    )
    with live_server(settings) as server, server.client(register_and_login(server, "restart")) as c:
        push(c, spec)
        run_id = submit(c, "survivor@1")
        wait(c, run_id, {"running"})
        deadline = time.monotonic() + 10
        while not count.exists():  # the first step runs
            assert time.monotonic() < deadline
            time.sleep(0.02)
        staged = c.post(f"{API}/runs", json={"workflow": "survivor@1"}).json()["id"]
    # the server is gone; its step goes on under the supervisor
    with (
        live_server(settings) as server,
        server.client(server.ctx.accounts.login("restart", STRONG).secret) as c,
    ):
        status = wait(c, run_id)
        assert status["state"] == "succeeded", status
        assert count.read_text().split() == ["first", "second"]  # each step ran once
        assert steps(c, run_id)["second"]["outputs"] == {"text": "one"}
        assert c.get(f"{API}/runs/{staged}").json()["state"] == "staged"
        types = [e["type"] for e in c.get(f"{API}/runs/{run_id}/events").json()]
        assert "step.lost" not in types and types[-1] == "run.succeeded"


def test_an_in_server_step_cut_by_a_restart_is_lost_and_retried(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    code = tmp_path / "code"
    code.mkdir()
    (code / "napper.py").write_text(
        "import time\n\ndef nap(seconds: float) -> int:\n    time.sleep(seconds)\n    return 1\n"
    )
    (code / "flowdeck.yaml").write_text(
        'name: napper\nversion: "1"\ninputs:\n  seconds: {type: float}\n'
        "steps:\n  s:\n    python: napper:nap\n    with: {seconds: '${{ inputs.seconds }}'}\n"
        "    retries: {count: 1, backoff: 0.1}\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in ("flowdeck.yaml", "napper.py"):
            zf.write(code / f, f)
    with live_server(settings) as server, server.client(register_and_login(server, "napper")) as c:
        r = c.post(
            f"{API}/workflows", content=buf.getvalue(), headers={"content-type": "application/zip"}
        )
        assert r.status_code in (200, 201), r.text
        server.ctx.accounts.create_user("root-nap", STRONG, admin=True)
        with server.client(server.ctx.accounts.login("root-nap", STRONG).secret) as admin:
            admin.put(f"{API}/workflows/{r.json()['ref']}/trusted", json={"trusted": True})
        run_id = submit(c, "napper@1", params={"seconds": 2}, resources={"executor": "inprocess"})
        wait(c, run_id, {"running"})
        deadline = time.monotonic() + 10
        while steps(c, run_id)["s"]["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with (
        live_server(settings) as server,
        server.client(server.ctx.accounts.login("napper", STRONG).secret) as c,
    ):
        status = wait(c, run_id)
        assert status["state"] == "succeeded", status  # the retry ran it again
        events = c.get(f"{API}/runs/{run_id}/events").json()
        lost = [e for e in events if e["type"] == "step.lost"]
        assert len(lost) == 1 and lost[0]["data"]["error"] == "the server restarted"
        assert steps(c, run_id)["s"]["attempts"] == 2
