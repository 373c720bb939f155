"""`flowdeck serve` as users start it: a real process, real HTTP."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from flowdeck.client import Client, ConnectionFailed
from tests.helpers import STRONG
from tests.serving import FLOWDECK, serve


def test_embedded_default_start_and_first_admin_from_environment(tmp_path: Path) -> None:
    pw_file = tmp_path / "admin-password"
    pw_file.write_text(STRONG + "\n")
    env = {"FLOWDECK_ADMIN_USERNAME": "root", "FLOWDECK_ADMIN_PASSWORD_FILE": str(pw_file)}
    with serve(tmp_path, env=env) as (url, log):
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "ready": True}
        r = httpx.post(f"{url}/api/v1/auth/login", json={"username": "root", "password": STRONG})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
    assert (tmp_path / "flowdeck-data" / "flowdeck.db").is_file()
    output = log.read_text()
    assert f"listening on http://127.0.0.1:{url.rsplit(':', 1)[1]}" in output
    assert STRONG not in output  # the password is never logged


def test_without_an_admin_it_says_how_to_create_one(tmp_path: Path) -> None:
    with serve(tmp_path) as (_url, log):
        pass
    assert "flowdeck admin create-user --admin NAME" in log.read_text()


def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with serve(tmp_path, "--data-dir", str(data), "--registration", "open") as (url, _):
        r = httpx.post(f"{url}/api/v1/auth/register", json={"username": "ada", "password": STRONG})
        assert r.status_code == 201
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "ada", "password": STRONG}
        ).json()["token"]
    with serve(tmp_path, "--data-dir", str(data)) as (url, _):
        r = httpx.get(f"{url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["username"] == "ada"


def test_invalid_setting_stops_start_up_with_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*FLOWDECK, "serve", "--sqlite-synchronous", "SOMETIMES"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid setting sqlite_synchronous" in result.stderr.replace("\n", " ")
    assert not (tmp_path / "flowdeck-data").exists()  # nothing was created


def test_console_script_is_installed() -> None:
    exe = shutil.which("flowdeck", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("flowdeck ")


def test_tls_with_hsts_and_secure_cookies(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    env = {"FLOWDECK_REGISTRATION": "open"}
    args = ("--tls-cert", str(cert_file), "--tls-key", str(key_file))
    with serve(tmp_path, *args, env=env, scheme="https", verify=client_ctx) as (url, log):
        assert url.startswith("https://")
        with httpx.Client(base_url=url, verify=client_ctx) as c:
            r = c.get("/healthz")
            assert r.headers["strict-transport-security"].startswith("max-age=")
            c.post("/api/v1/auth/register", json={"username": "tls", "password": STRONG})
            r = c.post(
                "/api/v1/auth/login",
                json={"username": "tls", "password": STRONG, "cookie": True},
            )
            cookies = r.headers.get_list("set-cookie")
            assert cookies and all("Secure" in h for h in cookies)
        # the SDK verifies by default (the server's CA is unknown to the system's bundle),
        # and takes a CA bundle's path or a context
        with Client(url) as sdk, pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY"):
            sdk.health()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        with Client(url, verify=str(ca_file)) as sdk:
            assert sdk.health()
    assert "listening on https://" in log.read_text()


def test_sigterm_ends_open_event_streams_and_the_server(tmp_path: Path) -> None:
    """serve() sends SIGTERM and requires a clean exit within its deadline: an open event
    stream must not hold the server up."""
    pw_file = tmp_path / "admin-password"
    pw_file.write_text(STRONG + "\n")
    env = {"FLOWDECK_ADMIN_USERNAME": "root", "FLOWDECK_ADMIN_PASSWORD_FILE": str(pw_file)}
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=30))
        with serve(tmp_path, env=env) as (url, _log):
            token = client.post(
                f"{url}/api/v1/auth/login", json={"username": "root", "password": STRONG}
            ).json()["token"]
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            response = stack.enter_context(
                client.stream("GET", f"{url}/api/v1/events", headers=headers)
            )
            assert response.status_code == 200
        with contextlib.suppress(httpx.TransportError):  # cut off: also an end
            for _line in response.iter_lines():
                pass


def test_sigterm_with_drain_lets_running_steps_finish(tmp_path: Path) -> None:
    pw_file = tmp_path / "admin-password"
    pw_file.write_text(STRONG + "\n")
    env = {"FLOWDECK_ADMIN_USERNAME": "root", "FLOWDECK_ADMIN_PASSWORD_FILE": str(pw_file)}
    spec = (
        'name: drained\nversion: "1"\nsteps:\n'
        "  a: {run: [sh, -c, 'sleep 1; echo done > out'], outputs: {o: {path: out}}}\n"
        "  b: {run: [/bin/true], needs: [a]}\n"
    )
    with serve(tmp_path, "--drain", env=env) as (url, _log):
        c = httpx.Client(base_url=url, timeout=30)
        token = c.post("/api/v1/auth/login", json={"username": "root", "password": STRONG}).json()[
            "token"
        ]
        c.headers["Authorization"] = f"Bearer {token}"
        c.post("/api/v1/workflows", content=spec, headers={"content-type": "application/yaml"})
        run_id = c.post("/api/v1/runs", json={"workflow": "drained@1", "start": True}).json()["id"]
        deadline = time.monotonic() + 10
        while not any(
            s["label"] == "a" and s["state"] == "running"
            for s in c.get(f"/api/v1/runs/{run_id}/steps").json()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        c.close()
    # serve() sent SIGTERM and waited for a clean exit: step a finished first, b never began
    work = tmp_path / "flowdeck-data" / "runs" / run_id / "work"
    assert (work / "a" / "out").read_text() == "done\n"
    assert not (work / "b").exists()
