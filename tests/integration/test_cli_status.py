"""``flowdeck admin status`` against the store of a real server with real runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from flowdeck.cli.main import app
from flowdeck.executors.cgroups import describe
from tests.helpers import live_server, make_settings, register_and_login

API = "/api/v1"
SPECS = {
    "fails": 'name: fails\nversion: "1"\nsteps:\n  t: {run: [/bin/sh, -c, "exit 3"]}\n',
    "sleeps": 'name: sleeps\nversion: "1"\nsteps:\n  t: {run: [/bin/sleep, "120"]}\n',
}


def wait_state(c: httpx.Client, run_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (status := c.get(f"{API}/runs/{run_id}").json())["state"] != state:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return dict(status)


def start(c: httpx.Client, workflow: str) -> str:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "start": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_admin_status_shows_queue_steps_slots_and_failures(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, slots=1)
    # the command reads the server's configuration, as an operator runs it
    env = {"FLOWDECK_DATA_DIR": str(tmp_path), "FLOWDECK_SLOTS": "1", "COLUMNS": "200"}
    runner = CliRunner()
    with live_server(settings) as srv:
        token = register_and_login(srv, "alice")
        with srv.client(token) as c:
            for spec in SPECS.values():
                r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "text/yaml"})
                assert r.status_code == 201, r.text
            failed = start(c, "fails@1")
            wait_state(c, failed, "failed")
            sleeping = start(c, "sleeps@1")
            wait_state(c, sleeping, "running")
            waiting = start(c, "sleeps@1")  # the only slot is taken: it stays queued
            try:
                result = runner.invoke(app, ["admin", "status"], env=env)
                assert result.exit_code == 0, result.output
                text = " ".join(result.output.split())
                assert "1 live" in text
                assert "server instances" in result.output  # the table of instances
                assert "1 runs queued (oldest waiting" in text
                assert "running steps 1" in text
                assert "slots 1 used of 1" in text
                assert "queued 1 running 1" in text
                assert "recent failures" in text
                assert failed in text
                assert "step sandbox bwrap, one per run" in text
                assert " ".join(describe(settings.step_uids).split()) in text

                result = runner.invoke(app, ["admin", "status", "--json"], env=env)
                assert result.exit_code == 0, result.output
                data = json.loads(result.output)
                assert data["queue_depth"] == 1
                assert data["running_steps"] == 1
                assert (data["slots_used"], data["slots_total"]) == (1, 1)
                assert data["active_runs"]["running"] == 1
                assert data["sandbox"] == "bwrap"
                assert data["step_limits"].startswith("rlimits: CPU time, address space")
                assert [f["run_id"] for f in data["recent_failures"]] == [failed]
                assert data["recent_failures"][0]["owner"] == "alice"
                assert data["recent_failures"][0]["workflow"] == "alice/fails@1"
                # each live instance with its load: this one runs one, queues the other
                [instance] = data["live_instances"]
                assert instance["pid"] == os.getpid()  # the live server is in this process
                assert (instance["active_runs"], instance["running_steps"]) == (2, 1)
                assert instance["heartbeat_age_s"] < 60
            finally:
                for run_id in (waiting, sleeping):
                    c.post(f"{API}/runs/{run_id}/kill")
                wait_state(c, sleeping, "killed")


def test_status_and_every_start_warn_of_an_unsandboxed_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """sandbox = "off" is said at every start and by ``flowdeck admin status``."""
    settings = make_settings(tmp_path, sandbox="off")
    env = {"FLOWDECK_DATA_DIR": str(tmp_path), "FLOWDECK_SANDBOX": "off", "COLUMNS": "200"}
    with caplog.at_level("WARNING", logger="flowdeck"), live_server(settings):
        pass
    assert any('sandbox = "off"' in r.getMessage() for r in caplog.records)
    result = CliRunner().invoke(app, ["admin", "status"], env=env)
    assert result.exit_code == 0, result.output
    assert "step sandbox off: steps run with the server's rights" in " ".join(result.output.split())
