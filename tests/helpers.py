"""Test helpers: a real uvicorn server in a thread, users made once, PostgreSQL access."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from flowdeck.api import create_app
from flowdeck.config import Settings, load_settings
from flowdeck.store.migrate import upgrade
from flowdeck.store.schema import metadata
from flowdeck.store.sql import SqlStore

STRONG = "correct horse battery staple 42"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlStore:
    """A migrated, empty SQL store for a fixture parametrized ``sqlite``/``postgres``: a
    file under ``tmp_path``, or the shared PostgreSQL test database emptied first."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'contract.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = SqlStore(url)
    upgrade(store.engine)
    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    return store


# Steps that import flowdeck (the CWL step) import this checkout's code when the tests run
# with PYTHONPATH pointing at it, not another copy installed in the interpreter.
FLOWDECK_CODE: dict[str, Any] = {"step_env_passthrough": ["PATH", "PYTHONPATH"]}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    # the step supervisor of a test's data directory should not outlive the test for long
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "registration": "open",
        "supervisor_idle_s": 3,
    }
    base.update(overrides)
    return load_settings(None, **base)


@contextmanager
def param_server(
    request: pytest.FixtureRequest, data_dir: Path, **overrides: Any
) -> Iterator[LiveServer]:
    """A live server on the database named by the fixture's param ("sqlite", "postgres")."""
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    with live_server(make_settings(data_dir, **overrides)) as server:
        yield server


@dataclass
class LiveServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    @property
    def ctx(self) -> Any:
        return self.server.config.app.state.ctx  # type: ignore[union-attr]


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real HTTP server (uvicorn) on a free loopback port, in a thread."""
    app = create_app(settings)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:  # pragma: no cover
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings, server, thread)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        app.state.ctx.close()


def register_and_login(srv: LiveServer, username: str, password: str = STRONG) -> str:
    with srv.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def pg_admin_url() -> str:
    return os.environ.get("FLOWDECK_TEST_PG_URL", DEFAULT_PG)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test session; dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.make_url(pg_admin_url())
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:
        engine.dispose()
        pytest.skip(
            f"PostgreSQL not reachable at {admin.render_as_string(hide_password=True)} ({exc}); "
            "start it (pg_ctlcluster 15 main start) or set FLOWDECK_TEST_PG_URL"
        )
    name = f"flowdeck_test_{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``12m``) mounted under ``tmp_path``: a disk a test may fill.
    Mounting needs root (CI runs as root): skipped otherwise, with the reason."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write until the disk is full."""
    with contextlib.suppress(OSError), path.open("wb") as f:
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()


TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}


def wait_ended(
    c: httpx.Client, run_id: str, states: set[str] = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    """Poll a run's status until it is in one of ``states`` (by default: it ended), and
    return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = c.get(f"/api/v1/runs/{run_id}").json()
        if status["state"] in states:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


@contextmanager
def loopback_service() -> Iterator[int]:
    """A TCP service bound to the host's 127.0.0.1 only, answering "host loopback": its
    port (a sandboxed step with network must not reach it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.sendall(b"host loopback\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


def network_probe(port: int) -> str:
    """A Python step that reaches a Debian mirror (outside) and tries the host's loopback
    service on ``port``, PostgreSQL's and the gateway's: prints ``outside 200`` and
    ``refused`` three times when the sandbox's network is as it should be."""
    return (
        "import socket, urllib.request\n"
        "print('outside', urllib.request.urlopen('https://deb.debian.org/', timeout=20).status)\n"
        "for host, port in (('127.0.0.1', PORT), ('127.0.0.1', 5432), ('10.0.2.2', PORT)):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        print('ESCAPED', host, port)\n"
        "    except OSError:\n"
        "        print('refused', host, port)\n"
    ).replace("PORT", str(port))
