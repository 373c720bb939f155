"""What the API offers besides runs, through both faces of the SDK: workflow visibility,
trust and deletion, staged-file references, passwords and API tokens, user
administration and the audit log (tests/faces.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdeck.client import (
    AuthenticationError,
    Client,
    ConflictError,
    InvalidRequest,
    NotFoundError,
    PermissionDeniedError,
)
from tests.faces import Connect
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

EXAMPLES = Path(__file__).parents[2] / "examples"
OTHER = "another long passphrase 77"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("sdk-admin"), login_max_failures_per_address=10**6
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def root(srv: LiveServer, face: Connect) -> Iterator[Client]:
    name = unique("root")
    srv.ctx.accounts.create_user(name, STRONG, admin=True)
    with face(srv.url) as client:
        client.login(name, STRONG)
        yield client


@pytest.fixture(scope="module")
def fd(srv: LiveServer, face: Connect) -> Iterator[Client]:
    with face(srv.url) as client:
        name = unique("sdkadm")
        client.register(name, STRONG)
        client.login(name, STRONG)
        client.push_workflow(EXAMPLES / "chain" / "flowdeck.yaml")
        client.push_workflow(EXAMPLES / "files" / "flowdeck.yaml")
        yield client


def test_admins_mark_a_workflow_trusted(fd: Client, root: Client) -> None:
    owner = fd.me()["username"]
    ref = f"{owner}/chain@1.0"
    assert fd.workflow("chain@1.0")["trusted"] is False
    with pytest.raises(PermissionDeniedError):
        fd.set_trusted("chain@1.0")
    assert root.set_trusted(ref)["trusted"] is True
    assert fd.workflow("chain@1.0")["trusted"] is True
    assert root.set_trusted(ref, trusted=False)["trusted"] is False
    with pytest.raises(NotFoundError):
        root.set_trusted(f"{owner}/nothing@1")


def test_visibility_and_deletion_of_a_workflow(
    fd: Client, srv: LiveServer, face: Connect, tmp_path: Path
) -> None:
    spec = tmp_path / "lonely.yaml"
    spec.write_text('name: lonely\nversion: "1"\nsteps:\n  a:\n    run: [true]\n')
    fd.push_workflow(spec)
    owner = fd.me()["username"]
    with face(srv.url) as other:
        name = unique("peer")
        other.register(name, STRONG)
        other.login(name, STRONG)
        with pytest.raises(NotFoundError):
            other.workflow(f"{owner}/lonely@1")
        shared = fd.set_visibility("lonely@1", "shared", users=[name])
        assert shared["visibility"] == "shared" and shared["shared_with"] == [name]
        assert other.workflow(f"{owner}/lonely@1")["name"] == "lonely"
        assert fd.set_visibility("lonely@1", "private")["visibility"] == "private"
    with pytest.raises(InvalidRequest):
        fd.set_visibility("lonely@1", "everyone")
    fd.delete_workflow("lonely@1")
    with pytest.raises(NotFoundError):
        fd.workflow("lonely@1")


def test_a_staged_file_is_referenced_from_a_product_and_removed(fd: Client, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("b\na\n")
    first = fd.create_run("sort-lines@1.0")
    first.upload("text", text)
    first.start()
    assert first.wait(timeout=60)["state"] == "succeeded"
    second = fd.create_run("sort-lines@1.0")
    staged = second.reference("text", run=first.id, product="sort.sorted")
    assert staged["input"] == "text" and staged["size"] == 4
    assert [f["filename"] for f in second.files()] == [staged["filename"]]
    second.remove_file("text", staged["filename"])
    assert second.files() == []
    with pytest.raises(NotFoundError):
        second.remove_file("text", staged["filename"])
    with pytest.raises(InvalidRequest):
        second.reference("text")  # neither data_path nor run and product


def test_password_change_and_api_tokens(srv: LiveServer, face: Connect) -> None:
    name = unique("tok")
    with face(srv.url) as c:
        c.register(name, STRONG)
        c.login(name, STRONG)
        made = c.create_token("ci", expires_in_days=7)
        assert made["token"] and made["name"] == "ci"
        assert "ci" in [t["name"] for t in c.tokens()]
        with face(srv.url, made["token"]) as script:
            assert script.me()["username"] == name
            c.revoke_token(made["id"])
            with pytest.raises(AuthenticationError):
                script.me()
        with pytest.raises(InvalidRequest, match="current password"):
            c.change_password("not my password", OTHER)
        kept = c.create_token("kept", expires_in_days=7)["token"]
        assert c.change_password(STRONG, OTHER, end_other_sessions=False)["ended_sessions"] == 0
        ended = c.create_token("ended", expires_in_days=7)["token"]
        # by default, as the server's, every other session and token ends; this one stays
        assert c.change_password(OTHER, STRONG)["ended_sessions"] >= 2
        assert c.me()["username"] == name
        for token in (kept, ended):
            with face(srv.url, token) as other, pytest.raises(AuthenticationError):
                other.me()
        c.change_password(STRONG, OTHER)
        c.logout()
        c.login(name, OTHER)
        assert c.me()["username"] == name


def test_user_administration_and_the_audit_log(root: Client, fd: Client) -> None:
    name = unique("made")
    made = root.create_user(name, STRONG)
    assert made["username"] == name and made["role"] == "user"
    assert name in [u["username"] for u in root.users()]
    assert root.change_user(name, "promote")["role"] == "admin"
    assert root.change_user(name, "demote")["role"] == "user"
    assert root.change_user(name, "disable")["status"] == "disabled"
    assert root.change_user(name, "enable")["status"] == "active"
    with pytest.raises(ConflictError):
        root.change_user(name, "approve")  # only a pending account
    with pytest.raises(ValueError, match="elevate"):
        root.change_user(name, "elevate")
    assert root.reset_password(name, OTHER)["username"] == name
    entries = root.audit(limit=3)
    assert [e["action"] for e in entries] == [
        "admin.reset_password",
        "admin.enable",
        "admin.disable",
    ]
    assert [e["action"] for e in root.audit(action="admin.promote")][:1] == ["admin.promote"]
    every = list(root.iter_audit())
    assert len(every) > 3 and every[:3] == entries
    root.delete_user(name)
    with pytest.raises(NotFoundError):
        root.delete_user(name)
    with pytest.raises(PermissionDeniedError):
        fd.users()
