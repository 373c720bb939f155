"""A full disk under the data directory (a small tmpfs): writes are refused with 503, reads
keep answering (a token's last-use stamp is best effort), /readyz says why it is not
ready, and all comes back once space is freed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import live_server, make_settings, register_and_login

API = "/api/v1"
QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write until the disk is full."""
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()


def test_a_full_disk_refuses_writes_keeps_reads_and_says_not_ready(small_disk: Path) -> None:
    settings = make_settings(small_disk / "data")
    with live_server(settings) as srv, srv.client(register_and_login(srv, "full")) as c:
        r = c.post(f"{API}/workflows", content=QUICK, headers={"content-type": "text/yaml"})
        assert r.status_code == 201, r.text
        assert c.get("/readyz").json()["ready"] is True
        # make the token's last use old: the next request records it (a write)
        secret = c.headers["authorization"].removeprefix("Bearer ")
        token = srv.ctx.accounts.authenticate(secret).token
        with srv.ctx.store.write() as tx:
            tx.touch_token(token.id, datetime(2026, 1, 1, tzinfo=UTC))
        srv.ctx.accounts._tokens.clear()  # no cached token: the store is read
        filler = small_disk / "filler"
        fill(filler)
        refused = None
        for _ in range(50):  # SQLite fills its free pages first
            refused = c.post(f"{API}/runs", json={"workflow": "quick@1", "tags": ["x" * 50]})
            if refused.status_code == 503:
                break
        assert refused is not None and refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        # reads go on, though recording the token's last use fails
        assert c.get(f"{API}/workflows").status_code == 200
        assert c.get(f"{API}/runs").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "full" in ready.json()["reason"] or "disk" in ready.json()["reason"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        filler.unlink()  # space again: the next write succeeds and readiness comes back
        created = c.post(f"{API}/runs", json={"workflow": "quick@1"})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
