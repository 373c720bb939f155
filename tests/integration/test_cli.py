"""The flowdeck command line: serve options, db, admin, and login/logout/whoami."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowdeck.cli.credentials import credentials_path
from flowdeck.cli.main import app
from flowdeck.config import Settings, env_var, option_name
from flowdeck.store.migrate import head_revision
from tests.helpers import STRONG, LiveServer, register_and_login, unique

runner = CliRunner()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), input=input, env=env)


def test_serve_help_names_every_option_and_its_variable() -> None:
    result = run("serve", "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in Settings.model_fields:
        assert option_name(name) in result.output
        assert env_var(name) in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "http"], {}, "invalid setting port (FLOWDECK_PORT, --port)"),
        ([], {"FLOWDECK_REGISTRATION": "maybe"}, "invalid setting registration"),
        (["--config", "/nonexistent/flowdeck.toml"], {}, "no such file"),
    ],
)
def test_serve_refuses_invalid_settings_with_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run("serve", *args, env=env)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_db_upgrade(tmp_path: Path) -> None:
    args = ["db", "upgrade"]
    env = {"FLOWDECK_DATA_DIR": str(tmp_path)}
    head = head_revision()
    first = run(*args, env=env)
    assert first.exit_code == 0 and f"upgraded from empty to {head}" in first.output
    again = run(*args, env=env)
    assert again.exit_code == 0 and f"already at {head}" in again.output


def test_admin_commands(tmp_path: Path) -> None:
    env = {"FLOWDECK_DATA_DIR": str(tmp_path)}
    r = run("admin", "create-user", "--admin", "root", input=STRONG + "\n", env=env)
    assert r.exit_code == 0, r.output
    assert "created admin 'root'" in r.output
    r = run("admin", "create-user", "alice", input="short\n", env=env)
    assert r.exit_code == 1 and "password too short" in r.output
    r = run("admin", "create-user", "alice", input="abcdefghijkl\n", env=env)
    assert r.exit_code == 1 and "too easy to guess" in r.output and "Sequences" in r.output
    r = run("admin", "create-user", "alice", input=STRONG + "\n", env=env)
    assert r.exit_code == 0
    for args, expected in [
        (("promote", "alice"), "alice: admin"),
        (("demote", "alice"), "alice: user"),
        (("disable", "alice"), "alice: disabled"),
        (("enable", "alice"), "alice: active"),
    ]:
        r = run("admin", *args, env=env)
        assert r.exit_code == 0 and expected in r.output, r.output
    r = run("admin", "approve", "alice", env=env)
    assert r.exit_code == 1 and "cannot approve an account that is active" in r.output
    r = run("admin", "reset-password", "alice", input="aaaaaaaaaaaa\n", env=env)
    assert r.exit_code == 1 and "too easy to guess" in r.output
    r = run("admin", "reset-password", "alice", input="another fine passphrase\n", env=env)
    assert r.exit_code == 0
    r = run("admin", "list-users", "--json", env=env)
    users = {u["username"]: u for u in json.loads(r.output)}
    assert users["root"]["role"] == "admin" and users["alice"]["status"] == "active"
    r = run("admin", "demote", "root", env=env)
    assert r.exit_code == 1 and "last active admin" in r.output
    r = run("admin", "delete-user", "alice", "--yes", env=env)
    assert r.exit_code == 0
    r = run("admin", "delete-user", "alice", "--yes", env=env)
    assert r.exit_code == 1 and "no user 'alice'" in r.output
    r = run("admin", "audit", "--json", env=env)
    actions = [e["action"] for e in json.loads(r.output)]
    assert actions[:3] == ["admin.delete_user", "admin.reset_password", "admin.enable"]


def test_login_whoami_logout(server: LiveServer) -> None:
    name = unique("cli")
    register_and_login(server, name)
    r = run("login", "--server", server.url, "-u", name, input=STRONG + "\n")
    assert r.exit_code == 0, r.output
    path = credentials_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert STRONG not in path.read_text()
    r = run("whoami", "--json")  # the last server logged in to is the default
    assert r.exit_code == 0 and json.loads(r.output)["username"] == name
    r = run("whoami", env={"FLOWDECK_URL": server.url})
    assert f"{name} (user, active)" in r.output
    r = run("logout")
    assert r.exit_code == 0 and "logged out" in r.output
    r = run("whoami", "--server", server.url)
    assert r.exit_code == 1 and "not logged in" in r.output
    r = run("whoami")  # the server just logged out of stays the default
    assert r.exit_code == 1 and f"not logged in to {server.url}:" in r.output
    assert "8080" not in r.output
    r = run("login", "-u", name, input=STRONG + "\n")
    assert r.exit_code == 0 and f"logged in to {server.url}" in r.output


def test_login_errors_are_one_line_and_nonzero(server: LiveServer) -> None:
    r = run("login", "--server", server.url, "-u", unique("nobody"), input="wrong password!\n")
    assert r.exit_code == 1 and "Invalid username or password" in r.output
    r = run("login", "--server", "http://127.0.0.1:9", "-u", "x", input="whatever pass\n")
    assert r.exit_code == 1 and "cannot reach flowdeck" in r.output
