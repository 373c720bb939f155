"""Per-user quotas hold across the servers of one database: each server says with its
heartbeat what its users hold on it, and the others count it before they start a run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, fresh_pg_database
from tests.serving import serve

HOLD = 'name: hold\nversion: "1"\nsteps:\n  main:\n    run: [sleep, "60"]\n'
QUICK = 'name: quick\nversion: "1"\nsteps:\n  main:\n    run: [echo, done]\n'
# A's heartbeat (a third of the lease) said what it holds, and B read it again (every 5 s)
PROPAGATED_S = 7.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with fresh_pg_database() as url, ExitStack() as stack:
        env = {
            "FLOWDECK_DATABASE_URL": url,
            "FLOWDECK_REGISTRATION": "open",
            "FLOWDECK_LEASE_TTL_S": "3",
            "FLOWDECK_QUOTA_MAX_ACTIVE_RUNS": "1",
        }
        args = ("--data-dir", str(tmp_path / "data"))
        a, _ = stack.enter_context(serve(tmp_path, *args, env=env))
        b, _ = stack.enter_context(serve(tmp_path, *args, env=env))
        yield a, b


def until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def test_a_run_through_another_server_waits_for_the_users_active_runs_quota(
    servers: tuple[str, str], tmp_path: Path
) -> None:
    a, b = servers
    (tmp_path / "hold.yaml").write_text(HOLD)
    (tmp_path / "quick.yaml").write_text(QUICK)
    with Client(a) as new:
        new.register("quinn", STRONG)
        token = new.login("quinn", STRONG)["token"]
    with Client(a, token) as on_a, Client(b, token) as on_b:
        on_a.push_workflow(tmp_path / "hold.yaml")
        on_a.push_workflow(tmp_path / "quick.yaml")
        first = on_a.create_run("hold@1", start=True)
        until(lambda: on_a.run(first.id).state == "running", "the first run to run on A")
        time.sleep(PROPAGATED_S)
        second = on_b.create_run("quick@1", start=True)  # queued through B: B's to start
        until(lambda: on_b.run(second.id).data.get("waiting"), "B to say why it waits")
        status = on_b.run(second.id).data
        assert status["state"] == "queued", status
        assert status["waiting"] == "quota: 1 of 1 active runs", status
        assert on_b.me()["usage"]["active_runs"] == 1
        on_a.run(first.id).kill()
        assert on_b.run(second.id).wait(timeout=60)["state"] == "succeeded"
