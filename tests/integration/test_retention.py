"""Retention through the API, the CLI and the server's own purging thread: ended runs
expire, kept and active ones never do (their files stay)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowdeck.cli.main import app
from flowdeck.client import ApiError, Client, NotFoundError
from flowdeck.runtime.rundir import RunDir
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

PRODUCE = """name: produce
version: "1"
steps:
  make:
    run: [sh, -c, "echo hello > out.txt"]
    outputs:
      out: {path: out.txt}
"""
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "3"]\n'
RETENTION = {
    "retention_runs_days": 30,
    "retention_files_days": 7,
    "retention_events_days": 30,
    "retention_audit_days": 30,
    "retention_webhook_days": 30,
}
runner = CliRunner()


def age(server: LiveServer, days: float) -> None:
    """Everything stored happened ``days`` earlier: runs ended, events, audit entries."""
    import sqlalchemy as sa

    from flowdeck.store import schema as t

    shift = timedelta(days=days)
    with server.ctx.store.write() as tx:
        conn = tx.conn
        for table, column in (
            (t.runs, "finished_at"),
            (t.events, "at"),
            (t.audit_log, "at"),
            (t.webhook_deliveries, "finished_at"),
        ):
            key = table.c.id
            for row_id, when in conn.execute(sa.select(key, table.c[column])).all():
                if when is not None:
                    conn.execute(table.update().where(key == row_id).values({column: when - shift}))


def env_of(server: LiveServer) -> dict[str, str]:
    s = server.settings
    env = {"FLOWDECK_DATA_DIR": str(s.data_dir), "COLUMNS": "200"}
    for name in RETENTION:
        value = getattr(s, name)
        if value is not None:
            env[f"FLOWDECK_{name.upper()}"] = str(value)
    return env


def cli(server: LiveServer, *args: str) -> Any:
    result = runner.invoke(app, list(args), env=env_of(server))
    return result


@contextmanager
def users(server: LiveServer, tmp_path: Path) -> Iterator[tuple[Client, Client]]:
    """An admin and a user with the test workflows, both logged in (the user through the
    CLI too)."""
    admin_name = unique("root")
    server.ctx.accounts.create_user(admin_name, STRONG, admin=True)
    admin = Client(server.url)
    admin.login(admin_name, STRONG)
    name = unique("u")
    user = Client(server.url)
    user.register(name, STRONG)
    user.login(name, STRONG)
    login = runner.invoke(
        app, ["login", "-u", name], input=STRONG + "\n", env={"FLOWDECK_URL": server.url}
    )
    assert login.exit_code == 0, login.output
    for text, file in ((PRODUCE, "produce.yaml"), (SLEEPY, "sleepy.yaml")):
        (tmp_path / file).write_text(text)
        user.push_workflow(tmp_path / file)
    with admin, user:
        yield admin, user


def ended(user: Client, workflow: str = "produce@1") -> str:
    run = user.create_run(workflow, start=True)
    assert run.wait(timeout=60)["state"] == "succeeded"
    return run.id


def folder(server: LiveServer, run_id: str) -> Path:
    return RunDir.of(server.settings.data_dir, run_id).root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(make_settings(tmp_path / "data", **RETENTION)) as srv:
        yield srv


def test_dry_run_shows_what_goes_and_purge_spares_kept_and_active_runs(
    server: LiveServer, tmp_path: Path
) -> None:
    with users(server, tmp_path) as (admin, user):
        purge_and_keep(server, admin, user, tmp_path)


def purge_and_keep(server: LiveServer, admin: Client, user: Client, tmp_path: Path) -> None:
    old, kept = ended(user), ended(user)
    kept_now = runner.invoke(app, ["run", "keep", kept], env={"FLOWDECK_URL": server.url})
    assert kept_now.exit_code == 0 and f"run {kept}: kept" in kept_now.stdout, kept_now.output
    status = runner.invoke(app, ["run", "status", kept], env={"FLOWDECK_URL": server.url})
    assert "kept: exempt from retention" in status.stdout
    staged = user.create_run("sleepy@1")
    active = user.create_run("sleepy@1", start=True)
    age(server, 40)
    plan = admin.request("GET", "/api/v1/admin/purge")
    assert plan["dry_run"] is True
    assert plan["runs"] == 1 and plan["sample"] == [old]
    assert plan["bytes"] > 0 and plan["audit"] > 0
    # the same through the CLI, on the server's data directory
    shown = cli(server, "admin", "purge", "--dry-run", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["sample"] == [old]
    assert "would delete: 1 run(s)" in cli(server, "admin", "purge", "--dry-run").stdout
    # nothing changed
    assert user.run(old).state == "succeeded" and folder(server, old).is_dir()
    done = admin.request("POST", "/api/v1/admin/purge")
    assert done["dry_run"] is False and done["runs"] == 1 and done["bytes"] == plan["bytes"]
    with pytest.raises(ApiError) as gone:
        user.run(old)
    assert gone.value.status == 404 and not folder(server, old).exists()
    with server.ctx.store.read() as tx:
        assert tx.list_events(subject_kind="run", subject_id=old) == []
    # kept: record, events and product stay
    keep_run = user.run(kept)
    assert keep_run.data["keep"] is True
    assert keep_run.download(keep_run.products()[0], tmp_path / "got").read_text() == "hello\n"
    assert keep_run.list_events()
    # active and staged runs were never touched, and the active one ends as it would have
    assert folder(server, active.id).is_dir()
    assert active.wait(timeout=60)["state"] == "succeeded"
    assert user.run(staged.id).state == "staged"
    # old audit entries went; the purge itself is recorded
    entries = admin.request("GET", "/api/v1/admin/audit", params={"limit": 100})["entries"]
    assert [e["action"] for e in entries] == ["retention.purge"]
    # no longer kept: the next purge takes it
    assert cli(server, "admin", "purge", "--expired").exit_code == 0
    unkept = runner.invoke(app, ["run", "keep", kept, "--off"], env={"FLOWDECK_URL": server.url})
    assert unkept.exit_code == 0 and "not kept" in unkept.stdout
    assert user.run(kept).keep(True)["keep"] is True
    assert user.run(kept).keep(False)["keep"] is False  # the SDK
    age(server, 40)
    purged = cli(server, "admin", "purge", "--expired")
    # (the active run ended meanwhile: it goes too)
    assert purged.exit_code == 0 and "deleted: 2 run(s)" in purged.stdout, purged.output
    assert kept in purged.stdout and active.id in purged.stdout


def test_files_expire_before_the_record(server: LiveServer, tmp_path: Path) -> None:
    with users(server, tmp_path) as (_admin, user):
        files_expire(server, user)


def files_expire(server: LiveServer, user: Client) -> None:
    run_id = ended(user)
    assert user.run(run_id).products()
    age(server, 10)
    purged = cli(server, "admin", "purge", "--expired", "--json")
    assert purged.exit_code == 0, purged.output
    report = json.loads(purged.stdout)
    assert report["runs"] == 0 and report["run_folders"] == 1 and report["sample"] == [run_id]
    run = user.run(run_id)
    assert run.state == "succeeded" and run.data["files_purged_at"] is not None
    assert run.products() == [] and not folder(server, run_id).exists()
    assert run.list_events()  # the history stays
    status = runner.invoke(app, ["run", "status", run_id], env={"FLOWDECK_URL": server.url})
    assert "files removed by retention" in status.stdout


def test_the_server_purges_by_itself(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", retention_runs_days=1, retention_interval_s=0.2)
    with live_server(settings) as server, users(server, tmp_path) as (_admin, user):
        run_id = ended(user)
        age(server, 2)
        deadline = time.monotonic() + 30
        while folder(server, run_id).exists() or _exists(user, run_id):
            assert time.monotonic() < deadline, "not purged"
            time.sleep(0.1)


def _exists(user: Client, run_id: str) -> bool:
    try:
        user.run(run_id)
    except NotFoundError:
        return False
    return True


def test_keep_is_for_the_owner_and_admins(server: LiveServer, tmp_path: Path) -> None:
    with users(server, tmp_path) as (_admin, user), Client(server.url) as other:
        keep_rights(user, other)


def keep_rights(user: Client, other: Client) -> None:
    run_id = ended(user)
    name = unique("o")
    other.register(name, STRONG)
    other.login(name, STRONG)
    with pytest.raises(ApiError) as denied:
        other.request("PUT", f"/api/v1/runs/{run_id}/keep", json={"keep": True})
    assert denied.value.status == 404
    for method in ("GET", "POST"):  # retention's purge is for admins
        with pytest.raises(ApiError) as forbidden:
            other.request(method, "/api/v1/admin/purge")
        assert forbidden.value.status == 403
    with pytest.raises(ApiError) as bad:
        user.request("PUT", f"/api/v1/runs/{run_id}/keep", json={"keep": "sometimes"})
    assert bad.value.status == 422
    assert user.run(run_id).data["keep"] is False
