"""Per-user secrets end to end: set through the API, the CLI and the SDK, given to real
steps (as a variable and as a file), and found nowhere else — not in any answer, event,
webhook payload or stored log, nor in clear anywhere under the data directory."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from typer.testing import CliRunner

from flowdeck.cli.main import app
from flowdeck.client import Client
from flowdeck.domain.accounts import Role
from tests.helpers import (
    STRONG,
    TERMINAL,
    LiveServer,
    live_server,
    make_settings,
    register_and_login,
    unique,
    wait_ended,
)
from tests.receiver import eventually, receiver

API = "/api/v1"
USES = """name: secretive
version: "1"
steps:
  use:
    shell: bash
    run: |
      echo "out:$GRID_TOKEN"
      echo "err:$GRID_TOKEN" >&2
      cat cert.pem
      env_sha=$(printf %s "$GRID_TOKEN" | sha256sum | cut -c1-64)
      file_sha=$(sha256sum < cert.pem | cut -c1-64)
      mode=$(stat -c %a cert.pem)
      printf '{"env": "%s", "file": "%s", "mode": "%s"}' $env_sha $file_sha $mode > checks.json
    secrets:
      - {name: grid_token, env: GRID_TOKEN}
      - {name: grid_cert, file: cert.pem}
    outputs:
      checks: {json: checks.json}
  after:
    needs: [use]
    run: [ls, -a, ../use]
    outputs:
      listing: {stdout: text}
"""
FAILS = """name: leaky
version: "1"
steps:
  boom:
    shell: bash
    run: |
      echo "the token is $GRID_TOKEN" >&2
      exit 3
    secrets:
      - {name: grid_token, env: GRID_TOKEN}
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("secrets") / "data",
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
        webhook_retry_base_s=0.05,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture
def opened() -> Iterator[list[httpx.Client]]:
    clients: list[httpx.Client] = []
    yield clients
    for client in clients:
        client.close()


def new_user(
    srv: LiveServer, opened: list[httpx.Client], prefix: str = "sec"
) -> tuple[str, httpx.Client]:
    name = unique(prefix)
    client = srv.client(register_and_login(srv, name))
    opened.append(client)
    for text in (USES, FAILS):
        r = client.post(
            f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
        )
        assert r.status_code in (200, 201), r.text
    return name, client


def run_to_end(c: httpx.Client, workflow: str) -> dict[str, Any]:
    r = c.post(f"{API}/runs", json={"workflow": workflow, "start": True})
    assert r.status_code == 201, r.text
    return wait_ended(c, r.json()["id"], timeout=30)


def everything_said(c: httpx.Client, run_id: str) -> str:
    """What the API says of a run: record, steps, events, every log of every attempt."""
    parts = [c.get(f"{API}/runs/{run_id}").text, c.get(f"{API}/runs/{run_id}/events").text]
    steps = c.get(f"{API}/runs/{run_id}/steps").json()
    parts.append(json.dumps(steps))
    for s in steps:
        for attempt in range(1, s["attempts"] + 1):
            for stream in ("stdout", "stderr"):
                r = c.get(
                    f"{API}/runs/{run_id}/steps/{s['name']}/logs",
                    params={
                        "stream": stream,
                        "attempt": attempt,
                        "index": -1 if s["index"] is None else s["index"],
                    },
                )
                assert r.status_code == 200, r.text
                parts.append(r.text)
    return "\n".join(parts)


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path


def assert_nowhere_in_clear(root: Path, *values: str) -> None:
    """No file under ``root`` (the database and its WAL, logs, work folders, journals)
    holds a value in clear."""
    for path in files_under(root):
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, f"{value[:4]}… in clear in {path}"


def test_a_secret_reaches_its_step_and_nothing_else(
    srv: LiveServer, opened: list[httpx.Client]
) -> None:
    token = "tok-" + unique("v") + "-Zq9"
    cert = "-----BEGIN CERT-----\n" + unique("c") + "\n-----END CERT-----\n"
    _, alice = new_user(srv, opened)
    with receiver([]) as rec:
        r = alice.put(f"{API}/secrets/grid_token", json={"value": token})
        assert r.status_code == 201, r.text
        assert set(r.json()) == {"name", "owner", "created_at", "updated_at"}
        r = alice.put(f"{API}/secrets/grid_cert", json={"value": cert})
        assert r.status_code == 201
        again = alice.put(f"{API}/secrets/grid_cert", json={"value": cert})
        assert again.status_code == 200
        assert again.json()["created_at"] == r.json()["created_at"]
        hook = alice.post(f"{API}/webhooks", json={"url": rec.url, "events": ["*"]}).json()

        run = run_to_end(alice, "secretive@1")
        assert run["state"] == "succeeded", run
        steps = {s["name"]: s for s in alice.get(f"{API}/runs/{run['id']}/steps").json()}
        assert steps["use"]["outputs"]["checks"] == {
            "env": sha(token),
            "file": sha(cert),
            "mode": "600",
        }
        assert "cert.pem" not in steps["after"]["outputs"]["listing"]  # removed after
        said = everything_said(alice, run["id"])
        assert "out:***" in said and "err:***" in said  # masked in the stored logs
        listed = alice.get(f"{API}/secrets").text
        failed = run_to_end(alice, "leaky@1")
        assert failed["state"] == "failed"
        boom = alice.get(f"{API}/runs/{failed['id']}/steps").json()[0]
        assert "the token is ***" in boom["error"]
        said += everything_said(alice, failed["id"]) + listed

        def failed_delivered() -> list[Any] | None:
            got = rec.received()
            return got if any(b"run.failed" in x.body for x in got) else None

        payloads = eventually(failed_delivered, what="the webhook deliveries")
        said += alice.get(f"{API}/webhooks/{hook['id']}/deliveries").text
    for value in (token, cert.strip(), cert.splitlines()[1]):
        assert value not in said
        assert all(value.encode() not in p.body for p in payloads)
    assert any(b"the token is ***" in p.body for p in payloads)
    # the webhook's signing secret is kept encrypted too (and its deliveries were signed)
    secret = hook["secret"]
    assert all(Webhook(secret).verify(p.body, p.headers) for p in payloads)
    assert_nowhere_in_clear(srv.settings.data_dir, token, cert.splitlines()[1], secret)


def test_another_user_cannot_see_use_or_delete_it_and_an_admin_cannot_read_it(
    srv: LiveServer, opened: list[httpx.Client]
) -> None:
    token = unique("only-alice-")
    alice_name, alice = new_user(srv, opened)
    _, bob = new_user(srv, opened)
    admin_name, admin = new_user(srv, opened, "adm")
    srv.ctx.accounts.set_role(None, admin_name, Role.ADMIN)
    assert alice.put(f"{API}/secrets/grid_token", json={"value": token}).status_code == 201
    assert bob.get(f"{API}/secrets").json() == {"items": []}
    assert bob.get(f"{API}/secrets/grid_token").status_code == 404
    assert bob.get(f"{API}/secrets", params={"owner": alice_name}).status_code == 404
    r = bob.delete(f"{API}/secrets/grid_token", params={"owner": alice_name})
    assert r.status_code == 404
    # bob's step naming grid_token looks in bob's secrets only
    run = run_to_end(bob, "leaky@1")
    assert run["state"] == "failed"
    [step] = bob.get(f"{API}/runs/{run['id']}/steps").json()
    assert "secret 'grid_token' is not set" in step["error"]
    assert token not in step["error"]
    # the admin sees names and dates, deletes, and never reads the value
    listed = admin.get(f"{API}/secrets", params={"owner": alice_name})
    assert [s["name"] for s in listed.json()["items"]] == ["grid_token"]
    one = admin.get(f"{API}/secrets/grid_token", params={"owner": alice_name})
    assert one.status_code == 200 and token not in one.text + listed.text
    assert set(one.json()) == {"name", "owner", "created_at", "updated_at"}
    r = admin.delete(f"{API}/secrets/grid_token", params={"owner": alice_name})
    assert r.status_code == 204
    assert alice.get(f"{API}/secrets/grid_token").status_code == 404
    audit = admin.get(f"{API}/admin/audit").text
    assert "secret.delete" in audit and token not in audit


@pytest.mark.parametrize(
    ("name", "body", "status", "field"),
    [
        ("1bad", {"value": "x"}, 422, None),
        ("has-dash", {"value": "x"}, 422, None),
        ("ok", {"value": ""}, 422, None),
        ("ok", {"value": "é" * 40_000}, 422, "value"),  # 80,000 bytes in UTF-8
        ("ok", {"value": 5}, 422, None),
    ],
)
def test_bad_names_and_values_are_refused_clearly(
    srv: LiveServer, name: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    with srv.client(register_and_login(srv, unique("bad"))) as c:
        r = c.put(f"{API}/secrets/{name}", json=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["message"]
        if field is not None:
            assert r.json()["error"]["details"]["field"] == field
        assert c.get(f"{API}/secrets").json() == {"items": []}


def test_the_key_file_is_created_private(srv: LiveServer) -> None:
    key = srv.settings.resolved_secret_key_file
    assert key == srv.settings.data_dir / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_set_through_the_cli_and_the_sdk_reach_the_step(
    srv: LiveServer, opened: list[httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, c = new_user(srv, opened, "cli")
    monkeypatch.setenv("FLOWDECK_URL", srv.url)
    runner = CliRunner()

    def cli(*args: str, input: str | None = None) -> Any:
        return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})

    assert cli("login", "-u", name, input=STRONG + "\n").exit_code == 0
    token = unique("from-cli-")
    r = cli("secret", "set", "grid_token", input=token + "\n")
    assert r.exit_code == 0 and token not in r.output, r.output
    cert = unique("from-sdk-") + "\n"
    with Client(srv.url, token=c.headers["authorization"].split()[1]) as sdk:
        got = sdk.set_secret("grid_cert", cert)
        assert got["name"] == "grid_cert" and "value" not in got
        assert [s["name"] for s in sdk.secrets()] == ["grid_cert", "grid_token"]
    r = cli("secret", "list", "--json")
    assert r.exit_code == 0 and token not in r.output
    assert [s["name"] for s in json.loads(r.output)] == ["grid_cert", "grid_token"]
    run = run_to_end(c, "secretive@1")
    assert run["state"] == "succeeded", run
    [use] = [s for s in c.get(f"{API}/runs/{run['id']}/steps").json() if s["name"] == "use"]
    assert use["outputs"]["checks"]["env"] == sha(token)  # its last newline dropped
    assert use["outputs"]["checks"]["file"] == sha(cert)
    assert cli("secret", "delete", "grid_token").exit_code == 0
    with Client(srv.url, token=c.headers["authorization"].split()[1]) as sdk:
        sdk.delete_secret("grid_cert")
        assert sdk.secrets() == []
    r = cli("secret", "delete", "grid_token")
    assert r.exit_code == 1 and "no secret grid_token" in r.output


PUBLIC = """name: pubsec
version: "1"
outputs:
  sha: {from: "${{ steps.s.outputs.sha }}"}
steps:
  s:
    shell: bash
    run: printf %s "$TOKEN" | sha256sum | cut -c1-64
    secrets:
      - {name: grid_token, env: TOKEN}
    outputs:
      sha: {stdout: text}
"""


def test_secrets_come_from_the_run_owner_also_for_anothers_workflow_and_child_runs(
    srv: LiveServer, opened: list[httpx.Client]
) -> None:
    alice_name, alice = new_user(srv, opened, "pub")
    _, bob = new_user(srv, opened, "use")
    r = alice.post(
        f"{API}/workflows",
        params={"visibility": "public"},
        content=PUBLIC,
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    alices, bobs = unique("alice-"), unique("bob-")
    assert alice.put(f"{API}/secrets/grid_token", json={"value": alices}).status_code == 201
    assert bob.put(f"{API}/secrets/grid_token", json={"value": bobs}).status_code == 201
    parent = (
        'name: parent\nversion: "1"\noutputs:\n  sha: {from: "${{ steps.child.outputs.sha }}"}\n'
        f"steps:\n  child:\n    uses: {alice_name}/pubsec@1\n"
    )
    r = bob.post(f"{API}/workflows", content=parent, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text

    direct = run_to_end(bob, f"{alice_name}/pubsec@1")
    assert direct["state"] == "succeeded", direct
    assert direct["outputs"]["sha"].strip() == sha(bobs)  # bob's run: bob's secret
    nested = run_to_end(bob, "parent@1")
    assert nested["state"] == "succeeded", nested
    assert nested["outputs"]["sha"].strip() == sha(bobs)  # the child run is bob's too
    mine = run_to_end(alice, "pubsec@1")
    assert mine["outputs"]["sha"].strip() == sha(alices)


SLOW = """name: slowsec
version: "1"
steps:
  s:
    shell: bash
    run: |
      echo "live:$T"
      sleep 3
    secrets:
      - {name: grid_token, env: T}
"""


def test_a_running_steps_log_is_served_only_once_masked(
    srv: LiveServer, opened: list[httpx.Client]
) -> None:
    _, c = new_user(srv, opened, "slow")
    value = unique("live-")
    assert c.put(f"{API}/secrets/grid_token", json={"value": value}).status_code == 201
    r = c.post(f"{API}/workflows", content=SLOW, headers={"content-type": "application/yaml"})
    assert r.status_code == 201
    run = c.post(f"{API}/runs", json={"workflow": "slowsec@1", "start": True}).json()
    logs = f"{API}/runs/{run['id']}/steps/s/logs"

    def running() -> bool:
        steps = c.get(f"{API}/runs/{run['id']}/steps").json()
        return bool(steps) and steps[0]["state"] == "running"

    eventually(running, what="the step running")
    r = c.get(logs)
    assert r.status_code == 409 and value not in r.text
    assert "has secrets" in r.json()["error"]["message"]
    eventually(
        lambda: c.get(f"{API}/runs/{run['id']}").json()["state"] == "succeeded",
        what="the run's end",
    )
    r = c.get(logs)
    assert r.status_code == 200 and r.text == "live:***\n"


def test_on_postgresql_values_and_webhook_secrets_are_stored_encrypted(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    url = request.getfixturevalue("pg_url")
    settings = make_settings(tmp_path / "data", database_url=url)
    value = unique("pg-value-")
    with live_server(settings) as pg, pg.client(register_and_login(pg, unique("pg"))) as c:
        for text in (USES, FAILS):
            c.post(f"{API}/workflows", content=text, headers={"content-type": "application/yaml"})
        assert c.put(f"{API}/secrets/grid_token", json={"value": value}).status_code == 201
        c.put(f"{API}/secrets/grid_cert", json={"value": "cert"})
        hook = c.post(f"{API}/webhooks", json={"url": "https://example.org/", "events": ["x"]})
        run = run_to_end(c, "secretive@1")
        assert run["state"] == "succeeded", run
        [use] = [s for s in c.get(f"{API}/runs/{run['id']}/steps").json() if s["name"] == "use"]
        assert use["outputs"]["checks"]["env"] == sha(value)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT ciphertext FROM secrets").scalars().all()
            signing = (
                conn.execute(
                    sa.text("SELECT secret FROM webhooks WHERE id = :id"), {"id": hook.json()["id"]}
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert stored and all(value not in s for s in stored)
    assert len(signing) == 1 and signing[0].startswith("fernet:")
    assert hook.json()["secret"] not in signing[0]


def test_a_step_re_adopted_after_a_restart_is_still_masked_and_its_file_removed(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"  # outside the step's folder: open to it (sandbox_extra_rw)
    marks.mkdir()
    settings = make_settings(tmp_path / "data", sandbox_extra_rw=[marks])
    started = marks / "started"
    spec = (
        'name: survivor\nversion: "1"\nsteps:\n  s:\n    shell: bash\n    run: |\n'
        '      echo "before:$T"\n'
        f"      umask 0; touch {started}\n"
        "      sleep 2\n"
        '      echo "after:$(cat key.txt)" >&2\n'
        "      exit 1\n"
        "    secrets:\n      - {name: tok, env: T}\n      - {name: tok, file: key.txt}\n"
    )
    value = unique("survives-")
    with live_server(settings) as server, server.client(register_and_login(server, "keeper")) as c:
        r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code == 201, r.text
        assert c.put(f"{API}/secrets/tok", json={"value": value}).status_code == 201
        run = c.post(f"{API}/runs", json={"workflow": "survivor@1", "start": True}).json()
        eventually(started.exists, what="the step's start")
    # the server is gone; its step goes on under the supervisor, and the next server
    # (which never held the value) masks what it wrote
    with (
        live_server(settings) as server,
        server.client(server.ctx.accounts.login("keeper", STRONG).secret) as c,
    ):
        ended = eventually(
            lambda: (r := c.get(f"{API}/runs/{run['id']}").json())["state"] in TERMINAL and r,
            what="the run's end",
        )
        assert ended["state"] == "failed"
        said = everything_said(c, run["id"])
        assert "before:***" in said and "after:***" in said and value not in said
    assert list(settings.data_dir.rglob("key.txt")) == []  # the secret's file went
    assert_nowhere_in_clear(settings.data_dir, value)
