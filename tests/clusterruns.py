"""What the acceptance tests of the cluster executors (Slurm, Dask) share: a workflow
pushed, a run submitted on the executor, its status and steps through the API, and the
command line as the test's user."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

from tests.crashkit import Server, call
from tests.helpers import STRONG

WAIT_S = 120.0
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}


def api(server: Server, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return call(server, token, method, path, **kw)


def push(server: Server, token: str, name: str, steps: str, extra: str = "") -> str:
    text = f'name: {name}\nversion: "1"\n{extra}steps:\n{steps}'
    r = api(
        server, token, "POST", "/workflows", content=text, headers={"content-type": "text/yaml"}
    )
    assert r.status_code in (200, 201), r.text
    return f"{name}@1"


def one_step(run: str, more: str = "") -> str:
    return f"  main:\n    run: {run}\n{more}"


def submit_on(executor: str, server: Server, token: str, workflow: str, **body: Any) -> str:
    """Create and start a run of ``workflow`` on ``executor`` (unless ``resources`` say
    otherwise): its id."""
    body.setdefault("resources", {"executor": executor})
    r = api(server, token, "POST", "/runs", json={"workflow": workflow, "start": True, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def status(server: Server, token: str, run_id: str) -> dict[str, Any]:
    r = api(server, token, "GET", f"/runs/{run_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def wait_state(
    server: Server, token: str, run_id: str, states: set[str] = TERMINAL
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        now = status(server, token, run_id)
        if now["state"] in states:
            return now
        assert time.monotonic() < deadline, f"{now}\n{server.excerpt()}"
        time.sleep(0.1)


def steps(server: Server, token: str, run_id: str) -> dict[str, dict[str, Any]]:
    r = api(server, token, "GET", f"/runs/{run_id}/steps")
    return {s["label"]: s for s in r.json()}


def cli_as(user: str, server: Server, *args: str, ok: bool = True) -> str:
    """``flowdeck *args`` as ``user`` (logged in first): its standard output (and error,
    for a command that must fail: ``ok=False``)."""
    env = {
        **os.environ,
        "FLOWDECK_URL": server.url,
        "XDG_CONFIG_HOME": str(server.tmp / "cli-config"),
        "COLUMNS": "200",
    }
    for argv, given in ((["login", "-u", user], STRONG + "\n"), (list(args), None)):
        done = subprocess.run(
            [sys.executable, "-m", "flowdeck", *argv],
            input=given,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        if argv[0] == "login" or ok:
            assert done.returncode == 0, done.stderr
    assert ok or done.returncode != 0, done.stdout
    return done.stdout if ok else done.stdout + done.stderr
