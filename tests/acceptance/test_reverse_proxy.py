"""examples/several-servers as written: two `flowdeck serve` processes of one PostgreSQL
database behind nginx with the example's configuration (on free ports).  A client of the
proxy sees one flowdeck: requests reach both servers, event streams and stream-port
WebSockets pass through."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from flowdeck.client import Client
from tests.helpers import STRONG, free_port, fresh_pg_database
from tests.serving import serve

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "several-servers"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, list[Path]]]:
    """The proxy's URL, and the two servers' logs."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    with fresh_pg_database() as url, ExitStack() as stack:
        env = {"FLOWDECK_DATABASE_URL": url, "FLOWDECK_REGISTRATION": "open"}
        args = ("--data-dir", str(tmp_path / "data"))
        a, log_a = stack.enter_context(serve(tmp_path, *args, env=env))
        b, log_b = stack.enter_context(serve(tmp_path, *args, env=env))
        port = free_port()
        conf = (EXAMPLE / "nginx.conf").read_text()
        for old, new in (
            ("127.0.0.1:8081", a.removeprefix("http://")),
            ("127.0.0.1:8082", b.removeprefix("http://")),
            ("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}"),
        ):
            assert old in conf
            conf = conf.replace(old, new)
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(conf)
        command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
        directives = f"daemon off; pid {prefix / 'nginx.pid'};"
        stderr = stack.enter_context((prefix / "stderr").open("wb"))
        nginx = subprocess.Popen([*command, "-g", directives], stderr=stderr)
        stack.callback(nginx.wait, 10)
        stack.callback(nginx.terminate)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert nginx.poll() is None, (prefix / "stderr").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (prefix / "stderr").read_text()
            time.sleep(0.1)
        yield base, [log_a, log_b]


def test_several_servers_behind_nginx_look_like_one(proxy: tuple[str, list[Path]]) -> None:
    base, logs = proxy
    with httpx.Client(base_url=base) as c:
        body = {"username": "pat", "password": STRONG}
        c.post("/api/v1/auth/register", json=body).raise_for_status()
        token = c.post("/api/v1/auth/login", json=body).json()["token"]
    with Client(base, token) as fd:
        fd.push_workflow(ROOT / "examples" / "streams" / "flowdeck.yaml")
        run = fd.create_run("double@1.0", start=True)
        ws = base.replace("http://", "ws://") + f"/api/v1/runs/{run.id}/inputs/records"
        auth = {"Authorization": f"Bearer {token}"}
        with connect(ws, additional_headers=auth) as sock:  # a WebSocket through nginx
            sock.send(json.dumps([{"n": 1}, {"n": 2}]))
            assert json.loads(sock.recv(timeout=30))["records"] == 2
        results = fd.run(run.id).output("results")
        got = []
        for record in results.read(sse=True, timeout=60):  # server-sent events through nginx
            got.append(record.data)
            if len(got) == 2:
                break
        assert got == [{"n": 1, "double": 2}, {"n": 2, "double": 4}]
        fd.run(run.id).input("records").close()
        types = []
        for event in fd.events(runs=[run.id], after=0):  # the run's event stream
            types.append(event.type)
            if event.type == "run.succeeded":
                break
        assert types[0] == "run.staged" and types[-1] == "run.succeeded"
    # nginx spread the requests over both servers
    for log in logs:
        assert "/api/v1/" in log.read_text(), f"{log} served nothing"
