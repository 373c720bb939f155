"""A full disk under the data directory (a small tmpfs): writes are refused with 503, reads
keep answering (a token's last-use stamp is best effort), /readyz says why it is not
ready; deleting runs (`DELETE /runs/{id}`, `flowdeck admin purge`) works on the full disk,
since their files go first, and all comes back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.helpers import fill, live_server, make_settings, register_and_login, small_tmpfs
from tests.serving import FLOWDECK

API = "/api/v1"
QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'
BIG = (
    'name: big\nversion: "1"\nsteps:\n'
    "  t: {run: [sh, -c, 'head -c 2500000 /dev/urandom > big.bin'],"
    " outputs: {o: {path: big.bin}}}\n"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs for the data directory."""
    with small_tmpfs(tmp_path, "12m") as mount:
        yield mount


def test_a_full_disk_refuses_writes_keeps_reads_and_says_not_ready(small_disk: Path) -> None:
    settings = make_settings(small_disk / "data")
    with live_server(settings) as srv, srv.client(register_and_login(srv, "full")) as c:
        for spec in (QUICK, BIG):
            r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "text/yaml"})
            assert r.status_code == 201, r.text
        big = [c.post(f"{API}/runs", json={"workflow": "big@1", "start": True}).json()["id"]]
        big.append(c.post(f"{API}/runs", json={"workflow": "big@1", "start": True}).json()["id"])
        for run_id in big:
            deadline = time.monotonic() + 30
            while (status := c.get(f"{API}/runs/{run_id}").json())["state"] != "succeeded":
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
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
        # an operator frees space: the run's files go first, then its record
        env = {**os.environ, "FLOWDECK_DATA_DIR": str(settings.data_dir)}
        purged = subprocess.run(
            [*FLOWDECK, "admin", "purge", big[0], "--yes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert purged.returncode == 0, purged.stderr
        assert f"purged {big[0]}" in purged.stdout
        assert c.get(f"{API}/runs/{big[0]}").status_code == 404
        assert not (settings.data_dir / "runs" / big[0]).exists()
        fill(filler.with_suffix(".more"))  # full again
        assert c.delete(f"{API}/runs/{big[1]}").status_code == 204  # a user's own run
        assert not (settings.data_dir / "runs" / big[1]).exists()
        created = c.post(f"{API}/runs", json={"workflow": "quick@1"})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
