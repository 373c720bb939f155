"""Warm cwltool workers (executors/cwlpool.py): CWL runs forked from a sandboxed process
that imported cwltool once — same results as cold, controlled like any step, and seeing
only their own run's files (real server, cwltool, bubblewrap)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flowdeck.cli.main import app
from flowdeck.executors.wire import read_records
from tests.acceptance.test_wes import _pgid_of_run
from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="warm cwltool workers need a root server (step_uids)"
)

API = "/api/v1"
CWL = Path(__file__).parents[1] / "data" / "cwl"
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}
WARM = "cwltool from a warm worker"
WHERE = {"url", "location", "path", "dirname"}
PROBE = """cwlVersion: v1.2
class: CommandLineTool
baseCommand: [sh, -c]
inputs:
  script:
    type: string
    inputBinding: {position: 1}
stdout: out.txt
outputs:
  out: stdout
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("cwlpool")
    settings = make_settings(root / "data", stop_grace_s=1, cwl_warm_workers=1, **FLOWDECK_CODE)
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def c(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "pooluser")) as client:
        yield client


def push(c: httpx.Client, text: bytes | str, name: str) -> str:
    r = c.post(
        f"{API}/workflows?name={name}", content=text, headers={"content-type": "application/yaml"}
    )
    assert r.status_code in (200, 201), r.text  # 200: pushed already
    return f"{name}@{r.json()['version']}"


def start(c: httpx.Client, ref: str, params: dict[str, object]) -> str:
    r = c.post(f"{API}/runs", json={"workflow": ref, "params": params, "start": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait(c: httpx.Client, run_id: str, states: set[str] = TERMINAL) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while True:
        run: dict[str, object] = c.get(f"{API}/runs/{run_id}").json()
        if run["state"] in states:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']}"
        time.sleep(0.1)


def stderr(c: httpx.Client, run_id: str) -> str:
    return c.get(f"{API}/runs/{run_id}/steps/cwl/logs", params={"stream": "stderr"}).text


def product(c: httpx.Client, run_id: str) -> str:
    products = c.get(f"{API}/runs/{run_id}/products").json()
    assert len(products) == 1, products
    return c.get(products[0]["url"]).text


def warm_run(c: httpx.Client, ref: str, params: dict[str, object]) -> str:
    """A run that a warm worker ran (the first CWL run of a supervisor starts the worker
    and runs cold; the worker then needs a moment to import cwltool)."""
    deadline = time.monotonic() + 90
    while True:
        run_id = start(c, ref, params)
        assert wait(c, run_id)["state"] == "succeeded"
        if WARM in stderr(c, run_id):
            return run_id
        assert time.monotonic() < deadline, "no CWL run came from a warm worker"
        time.sleep(0.5)


def step_pid(srv: LiveServer, run_id: str) -> int:
    """The host pid of the run's step (its process group), from its attempt journal."""
    journal = srv.settings.data_dir / "runs" / run_id / "logs" / "attempts.jsonl"
    deadline = time.monotonic() + 60
    while True:
        pids = [r["pid"] for r in read_records(journal).values() if r.get("pid")]
        if pids:
            return int(pids[0])
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)


def group(pgid: int) -> dict[int, str]:
    """pid -> state letter of every process of a process group."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found[int(entry)] = fields[0]
    return found


def workers(data_dir: Path) -> list[int]:
    """The warm workers' sandboxes (bwrap) of a data directory."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"flowdeck.executors.zygote" in cmd and os.fsencode(data_dir) in cmd:
                found.append(int(entry))
    return found


def where_stripped(value: object) -> object:
    """An output without where it is (run ids, folders)."""
    if isinstance(value, dict):
        return {k: where_stripped(v) for k, v in value.items() if k not in WHERE}
    if isinstance(value, list):
        return [where_stripped(v) for v in value]
    return value


def test_a_cwl_run_from_a_warm_worker_gives_what_a_cold_one_gives(c: httpx.Client) -> None:
    ref = push(c, (CWL / "greet.cwl").read_bytes(), "greet")
    cold = start(c, ref, {"name": "zed"})  # the supervisor's first CWL run starts cold
    assert wait(c, cold)["state"] == "succeeded"
    assert WARM not in stderr(c, cold)
    warm = warm_run(c, ref, {"name": "zed"})
    assert product(c, warm) == product(c, cold) == "Hello zed\n"
    outputs = [c.get(f"{API}/runs/{r}").json()["outputs"] for r in (cold, warm)]
    assert where_stripped(outputs[0]) == where_stripped(outputs[1])
    assert outputs[0]["cwl_output"]["greeting"]["basename"] == "zed.txt"
    assert "cwltool --no-container" in stderr(c, warm)
    assert "Final process status is success" in stderr(c, warm)


def test_kill_freeze_and_resume_act_on_a_pooled_runs_tools(
    srv: LiveServer, c: httpx.Client
) -> None:
    warm_run(c, push(c, (CWL / "greet.cwl").read_bytes(), "greet"), {"name": "w"})
    ref = push(c, (CWL / "sleep.cwl").read_bytes(), "sleeper")
    run_id = start(c, ref, {"seconds": 300})
    wait(c, run_id, {"running"})
    pgid = step_pid(srv, run_id)
    deadline = time.monotonic() + 60
    while WARM not in stderr(c, run_id) or len(group(pgid)) < 2:
        assert time.monotonic() < deadline, "cwltool never started its sleep"
        time.sleep(0.1)
    assert _pgid_of_run(run_id) == pgid  # its processes say their run, as cold ones do
    members = group(pgid)
    sleeper = [p for p in members if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")]
    assert sleeper, members

    assert c.post(f"{API}/runs/{run_id}/pause").json()["state"] == "paused"
    deadline = time.monotonic() + 10
    while set(group(pgid).values()) != {"T"}:
        assert time.monotonic() < deadline, f"not frozen: {group(pgid)}"
        time.sleep(0.05)
    assert c.post(f"{API}/runs/{run_id}/resume").json()["state"] == "running"
    deadline = time.monotonic() + 10
    while "T" in group(pgid).values():
        assert time.monotonic() < deadline, f"still frozen: {group(pgid)}"
        time.sleep(0.05)

    assert c.post(f"{API}/runs/{run_id}/kill").status_code == 200
    assert wait(c, run_id)["state"] == "killed"
    deadline = time.monotonic() + 30
    while group(pgid) or any(os.path.exists(f"/proc/{p}") for p in sleeper):
        assert time.monotonic() < deadline, "the pooled run's tools outlived kill"
        time.sleep(0.1)


def test_a_pooled_run_sees_neither_other_runs_nor_leftovers(
    srv: LiveServer, c: httpx.Client
) -> None:
    probe = push(c, PROBE, "probe")
    runs = srv.settings.data_dir / "runs"
    # an earlier run leaves files in /tmp and /dev/shm
    earlier = warm_run(
        c, probe, {"script": "echo x > /tmp/left-behind; echo x > /dev/shm/shm-left || true"}
    )
    # a run that is still going has a secret in its folders
    secret = (
        'echo "the secret" > secret.txt; echo y > /tmp/concurrent-tmp; '
        "echo done > ready; exec sleep 120"
    )
    other = start(c, probe, {"script": secret})
    deadline = time.monotonic() + 60
    while not list((runs / other).rglob("ready")):
        assert time.monotonic() < deadline, "the other run never got going"
        time.sleep(0.1)
    secret_file = next((runs / other).rglob("secret.txt"))
    assert secret_file.read_text() == "the secret\n"
    look = (
        f"ls -a /tmp /dev/shm; echo RUNS; ls -a {runs}; cat {secret_file}; "
        f"ls {runs / other}; ls {runs / earlier}; "
        "echo PROCS; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; "
        "grep -E 'CapEff|NoNewPrivs' /proc/self/status; id -u"
    )
    prober = start(c, probe, {"script": look})
    assert wait(c, prober)["state"] == "succeeded"
    assert WARM in stderr(c, prober) and WARM in stderr(c, other)
    seen = product(c, prober)
    assert "left-behind" not in seen and "shm-left" not in seen and "concurrent-tmp" not in seen
    listed = seen.split("RUNS", 1)[1].split("PROCS", 1)[0]
    assert prober in listed
    assert other not in listed and earlier not in listed
    assert "the secret" not in seen
    procs = seen.split("PROCS", 1)[1]
    assert "sleep 120" not in procs  # the other run's processes are not visible
    assert "CapEff:\t0000000000000000" in seen and "NoNewPrivs:\t1" in seen
    assert seen.strip().splitlines()[-1] != "0"
    c.post(f"{API}/runs/{other}/kill")
    assert wait(c, other)["state"] == "killed"


def admin_status(data_dir: Path, **settings: str) -> str:
    """``flowdeck admin status`` as an operator runs it on the server's machine, with its
    configuration."""
    env = {"FLOWDECK_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.update({f"FLOWDECK_{k.upper()}": v for k, v in settings.items()})
    result = CliRunner().invoke(app, ["admin", "status"], env=env)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_a_killed_warm_worker_is_replaced(srv: LiveServer, c: httpx.Client) -> None:
    ref = push(c, (CWL / "greet.cwl").read_bytes(), "greet")
    warm_run(c, ref, {"name": "before"})
    before = workers(srv.settings.data_dir)
    assert before, "no warm worker runs"
    assert "cwl warm workers 1 running of 1" in admin_status(srv.settings.data_dir)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (now := workers(srv.settings.data_dir)) or set(now) & set(before):
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)
    after = warm_run(c, ref, {"name": "after"})
    assert product(c, after) == "Hello after\n"


def test_no_warm_worker_outlives_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, cwl_warm_workers=1, supervisor_idle_s=1, **FLOWDECK_CODE)
    with live_server(settings) as server, server.client(register_and_login(server, "u1x")) as c:
        warm_run(c, push(c, (CWL / "greet.cwl").read_bytes(), "greet"), {"name": "x"})
        assert workers(data)
    deadline = time.monotonic() + 30
    while workers(data):  # the idle supervisor exits, and its workers with it
        assert time.monotonic() < deadline, "a warm worker outlived the server"
        time.sleep(0.2)
    assert "cwl warm workers 0 running of 1" in admin_status(data)


def test_with_the_pool_off_cwl_runs_start_cold(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, cwl_warm_workers=0, supervisor_idle_s=1, **FLOWDECK_CODE)
    with live_server(settings) as server, server.client(register_and_login(server, "u2x")) as c:
        ref = push(c, (CWL / "greet.cwl").read_bytes(), "greet")
        for name in ("a", "b"):
            run_id = start(c, ref, {"name": name})
            assert wait(c, run_id)["state"] == "succeeded"
            assert WARM not in stderr(c, run_id)
            assert product(c, run_id) == f"Hello {name}\n"
        assert not workers(data)
        assert "cwl warm workers off: CWL steps start cold" in admin_status(
            data, cwl_warm_workers="0"
        )
