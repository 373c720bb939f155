"""/api/v1/workflows over a real HTTP server: push, versions, archives, visibility."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import STRONG, LiveServer, register_and_login, unique

API = "/api/v1"
EXAMPLES = Path(__file__).parents[2] / "examples"
YAML = {"content-type": "application/yaml"}
ZIP = {"content-type": "application/zip"}


def chain(name: str, version: str = "1.0", word: str = "hello") -> str:
    text = (EXAMPLES / "chain" / "flowdeck.yaml").read_text()
    return (
        text.replace("name: chain", f"name: {name}")
        .replace('version: "1.0"', f'version: "{version}"')
        .replace("hello %s", f"{word} %s")
    )


def zip_dir(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> str:
    return register_and_login(server, unique("alice"))


@pytest.fixture(scope="module")
def bob(server: LiveServer) -> str:
    return register_and_login(server, unique("bob"))


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    name = unique("root")
    server.ctx.accounts.create_user(name, STRONG, admin=True)
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
    return str(r.json()["token"])


def push(
    c: httpx.Client, body: bytes | str, headers: dict[str, str] = YAML, **params: str
) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return c.post(f"{API}/workflows", content=content, headers=headers, params=params)


def test_versions_are_immutable_and_idempotent(server: LiveServer, alice: str) -> None:
    name = unique("wf")
    with server.client(alice) as c:
        first = push(c, chain(name))
        assert first.status_code == 201
        body = first.json()
        assert body["ref"].endswith(f"/{name}@1.0") and body["visibility"] == "private"
        again = push(c, chain(name).replace("# A linear chain", "# reformatted"))
        assert again.status_code == 200 and again.json()["id"] == body["id"]  # same content
        changed = push(c, chain(name, word="howdy"))
        assert changed.status_code == 409
        assert "versions are immutable" in changed.json()["error"]["message"]
        assert push(c, chain(name, "1.1", word="howdy")).status_code == 201
        got = c.get(f"{API}/workflows/{name}@1.0").json()
        assert got["content_hash"] == body["content_hash"] and "hello %s" in got["source"]
        assert c.get(f"{API}/workflows/{name}@latest").json()["version"] == "1.1"
        listed = c.get(f"{API}/workflows", params={"name": name}).json()["items"]
        assert [w["version"] for w in listed] == ["1.1", "1.0"]


def test_invalid_spec_lists_every_problem_with_positions(server: LiveServer, alice: str) -> None:
    from tests.unit.test_workflow_format import FIVE_MISTAKES

    with server.client(alice) as c:
        r = push(c, FIVE_MISTAKES)
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "invalid_workflow"
        assert [(e["path"], e["line"], e["column"]) for e in err["details"]["errors"]] == [
            ("inputs.chunks.type", 7, 11),
            ("steps.split.run[1]", 10, 18),
            ("steps.align", 14, 5),
            ("steps.merge.run[2]", 18, 52),
            ("steps.report", 22, 5),
        ]
        dry = c.post(f"{API}/workflows/validate", content=FIVE_MISTAKES, headers=YAML).json()
        assert dry["valid"] is False and len(dry["errors"]) == 5
        ok = c.post(f"{API}/workflows/validate", content=chain("dry"), headers=YAML).json()
        assert ok == {
            "valid": True,
            "errors": [],
            "name": "dry",
            "version": "1.0",
            "steps": ["greet", "shout", "count"],
        }
        assert c.get(f"{API}/workflows", params={"name": "dry"}).json()["items"] == []
        r = c.post(f"{API}/workflows", content=b"x", headers={"content-type": "image/png"})
        assert r.status_code == 422 and "unsupported Content-Type" in r.json()["error"]["message"]


def test_python_steps_need_their_archive(server: LiveServer, alice: str, tmp_path: Path) -> None:
    spec = (EXAMPLES / "wordcount" / "flowdeck.yaml").read_text()
    name = unique("wc")
    spec = spec.replace("name: wordcount", f"name: {name}")
    with server.client(alice) as c:
        r = push(c, spec)
        assert r.status_code == 422
        assert "not in the workflow archive" in r.text
        folder = tmp_path / "wc"
        folder.mkdir()
        (folder / "flowdeck.yaml").write_text(spec)
        (folder / "wordcount.py").write_text((EXAMPLES / "wordcount" / "wordcount.py").read_text())
        r = push(c, zip_dir(folder, prefix="wc/"), ZIP)  # a zipped folder: spec one level down
        assert r.status_code == 201, r.text
        wf = r.json()
        assert wf["has_archive"] is True
    stored = server.settings.data_dir / "workflows" / wf["id"]
    assert (stored / "wordcount.py").read_bytes() == (folder / "wordcount.py").read_bytes()
    with server.client(alice) as c:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(folder / "flowdeck.yaml", "flowdeck.yaml")
            tar.add(folder / "wordcount.py", "wordcount.py")
        r = push(c, buf.getvalue(), {"content-type": "application/gzip"})
        assert r.status_code == 200 and r.json()["id"] == wf["id"]  # same content, as .tar.gz
        assert c.delete(f"{API}/workflows/{name}@1.0").status_code == 204
    assert not stored.exists()


def evil_zip(name: str, data: bytes = b"x", attr: int | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("flowdeck.yaml", chain("evil"))
        info = zipfile.ZipInfo(name)
        if attr is not None:
            info.external_attr = attr << 16
        zf.writestr(info, data)
    return buf.getvalue()


def evil_tar(member: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return buf.getvalue()


def _tar(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size if kind == tarfile.REGTYPE else 0
    return evil_tar(info)


@pytest.mark.parametrize(
    ("archive", "media", "member"),
    [
        (evil_zip("../../evil.py"), "application/zip", "../../evil.py"),
        (evil_zip("/etc/cron.d/evil"), "application/zip", "/etc/cron.d/evil"),
        (evil_zip("link", b"/etc", 0o120777), "application/zip", "link"),
        (_tar("../evil.py"), "application/gzip", "../evil.py"),
        (_tar("link", tarfile.SYMTYPE, "/etc"), "application/gzip", "link"),
        (_tar("hard", tarfile.LNKTYPE, "flowdeck.yaml"), "application/gzip", "hard"),
        (_tar("dev", tarfile.CHRTYPE), "application/gzip", "dev"),
    ],
)
def test_archive_attacks_are_refused_naming_the_member(
    server: LiveServer, alice: str, archive: bytes, media: str, member: str
) -> None:
    with server.client(alice) as c:
        r = push(c, archive, {"content-type": media})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "archive_rejected" and err["details"]["member"] == member
    assert member in err["message"]
    leftovers = list((server.settings.data_dir / "tmp").glob("*/*"))
    assert leftovers == []  # nothing of a refused upload stays on disk


def test_symlink_then_write_through_is_refused(server: LiveServer, alice: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("scripts")
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        tar.addfile(link)
        through = tarfile.TarInfo("scripts/evil.sh")
        through.size = 1
        tar.addfile(through, io.BytesIO(b"x"))
    with server.client(alice) as c:
        r = push(c, buf.getvalue(), {"content-type": "application/gzip"})
    assert r.status_code == 422 and r.json()["error"]["details"]["member"] == "scripts"
    assert not Path("/tmp/evil.sh").exists()


def test_a_hundred_thousand_members_are_refused(server: LiveServer, alice: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("flowdeck.yaml", chain("many"))
        for i in range(100_000):
            zf.writestr(f"f{i}", b"")
    with server.client(alice) as c:
        r = push(c, buf.getvalue(), ZIP)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["reason"] == "too_many_members"


def test_zip_bomb_is_refused(server: LiveServer, alice: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("flowdeck.yaml", chain("bomb"))
        zf.writestr("zeros.bin", b"\0" * (60 * 1024 * 1024))
    with server.client(alice) as c:
        r = push(c, buf.getvalue(), ZIP)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["member"] == "zeros.bin"


def test_private_workflows_are_invisible_to_others(
    server: LiveServer, alice: str, bob: str
) -> None:
    name = unique("priv")
    with server.client(alice) as c:
        ref = push(c, chain(name)).json()["ref"]
    with server.client(bob) as c:
        for method in ("GET", "DELETE"):
            r = c.request(method, f"{API}/workflows/{ref}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = c.put(f"{API}/workflows/{ref}/visibility", json={"visibility": "public"})
        assert r.status_code == 404
        assert c.get(f"{API}/workflows", params={"name": name}).json()["items"] == []
        assert c.get(f"{API}/workflows/{name}@1.0").status_code == 404  # bob's own namespace


def test_public_and_shared_workflows(server: LiveServer, alice: str, bob: str) -> None:
    name = unique("pub")
    carol = register_and_login(server, unique("carol"))
    bob_name = httpx.get(
        f"{server.url}{API}/auth/me", headers={"Authorization": f"Bearer {bob}"}
    ).json()["username"]
    with server.client(alice) as c:
        ref = push(c, chain(name), visibility="public").json()["ref"]
        shared_ref = push(c, chain(name, "2.0")).json()["ref"]
        r = c.put(
            f"{API}/workflows/{shared_ref}/visibility",
            json={"visibility": "shared", "users": [bob_name]},
        )
        assert r.status_code == 200 and r.json()["shared_with"] == [bob_name]
        r = c.put(
            f"{API}/workflows/{shared_ref}/visibility",
            json={"visibility": "shared", "users": ["no-such-user"]},
        )
        assert r.status_code == 422
    with server.client(bob) as c:
        assert c.get(f"{API}/workflows/{ref}").json()["visibility"] == "public"
        assert c.get(f"{API}/workflows/{shared_ref}").status_code == 200
        assert c.delete(f"{API}/workflows/{ref}").status_code == 403  # readable, not writable
        listed = {
            w["ref"] for w in c.get(f"{API}/workflows", params={"name": name}).json()["items"]
        }
        assert listed == {ref, shared_ref}
    with server.client(carol) as c:
        assert c.get(f"{API}/workflows/{ref}").status_code == 200
        assert c.get(f"{API}/workflows/{shared_ref}").status_code == 404


def test_only_admins_mark_workflows_trusted(server: LiveServer, alice: str, admin: str) -> None:
    name = unique("trust")
    with server.client(alice) as c:
        ref = push(c, chain(name)).json()["ref"]
        assert push(c, chain(name)).json()["trusted"] is False
        assert c.put(f"{API}/workflows/{ref}/trusted", json={"trusted": True}).status_code == 403
    with server.client(admin) as c:
        r = c.put(f"{API}/workflows/{ref}/trusted", json={"trusted": True})
        assert r.status_code == 200 and r.json()["trusted"] is True
        assert any(w["ref"] == ref for w in c.get(f"{API}/workflows").json()["items"])


def test_delete_is_refused_while_an_active_run_uses_the_workflow(
    server: LiveServer, alice: str
) -> None:
    name = unique("busy")
    with server.client(alice) as c:
        wf = push(c, chain(name)).json()
        run = c.post(f"{API}/runs", json={"workflow": wf["ref"]}).json()  # staged: active
        r = c.delete(f"{API}/workflows/{wf['ref']}")
        assert r.status_code == 409 and "1 active run" in r.json()["error"]["message"]
        assert c.get(f"{API}/workflows/{wf['ref']}").status_code == 200  # still there
        owner = c.get(f"{API}/auth/me").json()["username"]
        r = httpx.delete(
            f"{server.url}{API}/admin/users/{owner}",
            headers={"Authorization": f"Bearer {admin_token(server)}"},
        )
        assert r.status_code == 409 and "active run" in r.json()["error"]["message"]
        assert c.post(f"{API}/runs/{run['id']}/stop").json()["state"] == "cancelled"
        assert c.delete(f"{API}/workflows/{wf['ref']}").status_code == 204
        finished = c.get(f"{API}/runs/{run['id']}").json()  # the record outlives it
        assert finished["workflow"] == wf["ref"] and finished["state"] == "cancelled"


def test_another_user_can_run_a_public_workflow(server: LiveServer, alice: str, bob: str) -> None:
    name = unique("pubrun")
    with server.client(alice) as c:
        ref = push(c, chain(name), visibility="public").json()["ref"]
    with server.client(bob) as c:
        run_id = c.post(f"{API}/runs", json={"workflow": ref, "start": True}).json()["id"]
        deadline = time.monotonic() + 30
        while (status := c.get(f"{API}/runs/{run_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status["state"] == "succeeded" and status["outputs"]["shouted"] == "HELLO WORLD"


def admin_token(server: LiveServer) -> str:
    name = unique("root")
    server.ctx.accounts.create_user(name, STRONG, admin=True)
    return server.ctx.accounts.login(name, STRONG).secret


def test_schema_is_public(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}{API}/schema/workflow.json")
    assert r.status_code == 200 and r.json()["title"] == "WorkflowSpec"
