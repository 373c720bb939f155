"""Faults inside a run — a step killed by a signal, a memory limit, a full disk (a file
size limit) — are recorded with their reason, and the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import live_server, make_settings, register_and_login

API = "/api/v1"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = make_settings(
        tmp_path_factory.mktemp("faults"),
        max_step_file_bytes=100_000,
        login_max_failures_per_address=10**6,
    )
    with live_server(settings) as srv:
        c = srv.client(register_and_login(srv, "faulty"))
        yield c
        c.close()


def run(c: httpx.Client, name: str, step: str) -> dict[str, Any]:
    spec = f'name: {name}\nversion: "1"\nsteps:\n  s:\n{step}'
    r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "application/yaml"})
    assert r.status_code in (200, 201), r.text
    run_id = c.post(f"{API}/runs", json={"workflow": f"{name}@1", "start": True}).json()["id"]
    deadline = time.monotonic() + 60
    while (status := c.get(f"{API}/runs/{run_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return dict(status)


def test_a_step_killed_by_a_signal(client: httpx.Client) -> None:
    status = run(client, "segv", "    run: [sh, -c, 'kill -SEGV $$']\n")
    assert status["state"] == "failed"
    assert "killed by signal SIGSEGV" in status["error"]["message"]


def test_a_step_over_its_memory_limit(client: httpx.Client) -> None:
    step = (
        "    run: [python3, -c, 'x = bytearray(512 * 1024 * 1024)']\n"
        "    resources: {memory: 128Mi}\n"
    )
    status = run(client, "hog", step)
    assert status["state"] == "failed"
    assert "MemoryError" in status["error"]["message"]


def test_a_step_that_fills_its_disk(client: httpx.Client, tmp_path: Path) -> None:
    step = "    run: [sh, -c, 'exec head -c 1000000 /dev/zero > big']\n"
    status = run(client, "filler", step)
    assert status["state"] == "failed"
    assert "SIGXFSZ" in status["error"]["message"]
    assert "file size limit" in status["error"]["message"]


def test_the_server_keeps_serving_after_faults(client: httpx.Client) -> None:
    for name, step in [
        ("segv2", "    run: [sh, -c, 'kill -SEGV $$']\n"),
        ("ok", "    run: [/bin/true]\n"),
    ]:
        status = run(client, name, step)
        assert status["state"] == ("failed" if name == "segv2" else "succeeded")
    assert client.get("/healthz").status_code == 200
