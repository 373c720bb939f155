"""`flowdeck serve --log-format json`: every log line a JSON object; a request's lines carry
its request id (the client's X-Request-ID, echoed) and the run it is about."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_serve import serve
from tests.helpers import STRONG

API = "/api/v1"
SPEC = 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


def json_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("scheduler_process", ["false", "true"])
def test_json_log_lines_carry_request_and_run_ids(tmp_path: Path, scheduler_process: str) -> None:
    env = {
        "FLOWDECK_SCHEDULER_PROCESS": scheduler_process,  # its lines are JSON too
        "FLOWDECK_LOG_FORMAT": "json",
        "FLOWDECK_LOG_LEVEL": "info",
        "FLOWDECK_REGISTRATION": "open",
    }
    with serve(tmp_path, env=env) as (url, log), httpx.Client(base_url=url) as c:
        c.post(f"{API}/auth/register", json={"username": "logger", "password": STRONG})
        token = c.post(f"{API}/auth/login", json={"username": "logger", "password": STRONG})
        c.headers["Authorization"] = f"Bearer {token.json()['token']}"
        r = c.post(f"{API}/workflows", content=SPEC, headers={"content-type": "text/yaml"})
        assert r.status_code == 201, r.text
        run_id = c.post(f"{API}/runs", json={"workflow": "one@1"}).json()["id"]
        r = c.get(f"{API}/runs/{run_id}", headers={"X-Request-ID": "req-json-1"})
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "req-json-1"
        deadline = time.monotonic() + 30
        while not (mine := [x for x in json_lines(log) if x.get("request_id") == "req-json-1"]):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    assert mine[0]["run_id"] == run_id
    assert run_id in mine[0]["message"]  # uvicorn's access line of that request
    lines = json_lines(log)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    if scheduler_process == "true":
        started = [x for x in lines if x["message"].startswith("scheduler process ")]
        assert started and started[0]["logger"] == "flowdeck.scheduler"
    created = [x for x in lines if "POST /api/v1/runs " in x["message"]]
    assert created and created[0]["request_id"]  # generated when the client sent none
    assert created[0]["run_id"] is None  # no run in its path
    # nothing but JSON objects on the log stream, apart from the start-up banner
    banner = ("flowdeck listening", "database:", "data directory:", "no admin yet", "(or set")
    for line in log.read_text().splitlines():
        assert line.startswith("{") or line.startswith(banner) or not line.strip(), line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_in_urls_are_not_written_to_the_log(tmp_path: Path, log_format: str) -> None:
    env = {
        "FLOWDECK_LOG_FORMAT": log_format,
        "FLOWDECK_LOG_LEVEL": "info",
        "FLOWDECK_REGISTRATION": "open",
    }
    with serve(tmp_path, env=env) as (url, log), httpx.Client(base_url=url) as c:
        c.post(f"{API}/auth/register", json={"username": "leaky", "password": STRONG})
        token = c.post(f"{API}/auth/login", json={"username": "leaky", "password": STRONG})
        secret = token.json()["token"]
        r = c.get(f"{API}/auth/me", params={"access_token": secret})
        assert r.status_code == 422  # refused, as before
        r = c.get(
            f"{API}/runs",
            params={"limit": 5, "token": secret, "password": "hunter2hunter2"},
            headers={"X-Request-ID": "req-redact-1"},
        )
        assert r.status_code == 422
        deadline = time.monotonic() + 30
        while "limit=5" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    text = log.read_text()
    assert secret not in text and secret[4:20] not in text and "hunter2hunter2" not in text
    assert f"{API}/auth/me?access_token=[REDACTED]" in text
    assert "limit=5&token=[REDACTED]&password=[REDACTED]" in text
