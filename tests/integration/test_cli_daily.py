"""`run list --state a,b --since --until --search` and `token create|list|revoke` against
a live server (typer's CliRunner)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from flowdeck.cli.main import app
from flowdeck.client import ApiError, Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

FAILING = 'name: failing\nversion: "1"\nsteps:\n  boom:\n    run: [sh, -c, "exit 3"]\n'
runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("cli-daily"))
    with live_server(settings) as server:
        yield server


@pytest.fixture
def user(srv: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLOWDECK_URL", srv.url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    name = unique("daily")
    with Client(srv.url) as c:
        c.register(name, STRONG)
    assert cli("login", "-u", name, input=STRONG + "\n").exit_code == 0
    (tmp_path / "failing.yaml").write_text(FAILING)
    assert cli("workflow", "push", str(tmp_path / "failing.yaml")).exit_code == 0
    return name


def ids(result: Result) -> set[str]:
    return {r["id"] for r in as_json(result)}


def test_run_list_takes_several_states_a_time_window_and_a_search(user: str) -> None:
    watched = cli("run", "submit", "failing@1", "--watch", "--json")
    assert watched.exit_code == 3, watched.output  # the exit code of a failed run
    failed = json.loads(watched.stdout)
    assert failed["state"] == "failed"
    night = as_json(cli("run", "create", "failing@1", "--tag", "Nightly-Build", "--json"))
    other = as_json(cli("run", "create", "failing@1", "--json"))
    every = {failed["id"], night["id"], other["id"]}

    assert ids(cli("run", "list", "--state", "failed,staged", "--json")) == every
    both = cli("run", "list", "--state", "failed", "--state", "staged", "--json")
    assert ids(both) == every
    assert ids(cli("run", "list", "--state", "failed", "--json")) == {failed["id"]}
    assert ids(cli("run", "list", "--search", "nightly", "--json")) == {night["id"]}
    assert ids(cli("run", "list", "--search", other["id"][-8:].upper(), "--json")) == {other["id"]}
    assert ids(cli("run", "list", "--since", "1h", "--json")) == every
    assert ids(cli("run", "list", "--until", "1h", "--json")) == set()
    assert ids(cli("run", "list", "--since", "2999-01-01", "--json")) == set()
    assert ids(cli("run", "list", "--until", "2999-01-01T00:00+02:00", "--json")) == every
    table = cli("run", "list", "--state", "staged,failed", "--search", "NIGHTLY")
    assert table.exit_code == 0 and night["id"] in table.stdout
    bad = cli("run", "list", "--since", "yesterday")
    assert bad.exit_code == 1 and "--since: 'yesterday'" in bad.stderr
    wrong = cli("run", "list", "--state", "failed,sleeping")
    assert wrong.exit_code == 1 and "query.state.1" in wrong.stderr  # the second of a,b


def test_tokens_are_created_listed_and_revoked(user: str, srv: LiveServer) -> None:
    made = as_json(cli("token", "create", "nightly", "--days", "7", "--json"))
    secret = made["token"]
    with Client(srv.url, token=secret) as c:
        assert c.me()["username"] == user
    listed = as_json(cli("token", "list", "--json"))
    mine = next(t for t in listed if t["id"] == made["id"])
    assert mine["name"] == "nightly" and mine["kind"] == "api" and mine["revoked_at"] is None
    assert secret not in json.dumps(listed)
    table = cli("token", "list")
    assert table.exit_code == 0 and "nightly" in table.stdout
    printed = cli("token", "create", "second")
    assert printed.exit_code == 0 and "shown only now" in printed.stdout

    assert as_json(cli("token", "revoke", made["id"], "--json")) == {
        "id": made["id"],
        "revoked": True,
    }
    again = next(t for t in as_json(cli("token", "list", "--json")) if t["id"] == made["id"])
    assert again["revoked_at"] is not None
    with Client(srv.url, token=secret) as c, pytest.raises(ApiError) as refused:
        c.me()
    assert refused.value.status == 401
    missing = cli("token", "revoke", "tok_nothing")
    assert missing.exit_code == 1 and "tok_nothing" in missing.stderr


def test_the_api_sorts_by_state_and_names_a_wrong_sort(user: str, srv: LiveServer) -> None:
    for _ in range(2):
        assert cli("run", "create", "failing@1").exit_code == 0
    assert cli("run", "submit", "failing@1", "--watch").exit_code == 3
    with Client(srv.url) as c:
        token = c.login(user, STRONG)["token"]
    with srv.client(token) as http:
        first = http.get("/api/v1/runs", params={"sort": "state", "limit": 1}).json()
        rest = http.get(
            "/api/v1/runs", params={"sort": "state", "cursor": first["next_cursor"]}
        ).json()
        states = [r["state"] for r in first["items"] + rest["items"]]
        assert states == sorted(states) and states[0] == "failed"
        down = http.get("/api/v1/runs", params={"sort": "-state"}).json()["items"]
        assert [r["state"] for r in down] == sorted(states, reverse=True)
        wrong = http.get("/api/v1/runs", params={"sort": "duration"})
        assert wrong.status_code == 422 and "sort" in wrong.text
