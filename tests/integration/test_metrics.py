"""GET /metrics over a real HTTP server: who may read it, and what a run leaves in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import STRONG, LiveServer, live_server, make_settings, register_and_login
from tests.receiver import eventually, receiver

API = "/api/v1"
SCRAPER = "scraper-token-0123456789abcdef"
ONE_STEP = 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data: Path = tmp_path_factory.mktemp("metrics")
    settings = make_settings(data, metrics_token=SCRAPER, webhook_allow_networks=["127.0.0.1/32"])
    with live_server(settings) as s:
        yield s


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_need_an_admin_or_the_metrics_token(srv: LiveServer) -> None:
    user = register_and_login(srv, "plainuser")
    srv.ctx.accounts.create_user("rootuser", STRONG, admin=True)
    with srv.client() as c:
        assert c.get("/metrics").status_code == 401
        r = c.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert r.status_code == 401
        r = c.get("/metrics", headers={"Authorization": f"Bearer {SCRAPER}"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "flowdeck_runs" in r.text
        token = c.post(f"{API}/auth/login", json={"username": "rootuser", "password": STRONG})
        assert (
            c.get(
                "/metrics", headers={"Authorization": f"Bearer {token.json()['token']}"}
            ).status_code
            == 200
        )
    with srv.client(user) as c:
        r = c.get("/metrics")
        assert r.status_code == 404  # a user does not learn that the route exists
        assert r.json()["error"]["code"] == "not_found"


def test_a_finished_run_shows_in_the_metrics(srv: LiveServer) -> None:
    token = register_and_login(srv, "runner")
    with srv.client(token) as c:
        r = c.post(
            f"{API}/workflows", content=ONE_STEP, headers={"content-type": "application/yaml"}
        )
        assert r.status_code == 201, r.text
        run_id = c.post(f"{API}/runs", json={"workflow": "one@1", "start": True}).json()["id"]
        deadline = time.monotonic() + 60
        while c.get(f"{API}/runs/{run_id}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with srv.client(SCRAPER) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    m = samples(r.text)
    assert m[("flowdeck_runs", (("state", "succeeded"),))] >= 1
    assert m[("flowdeck_runs", (("state", "queued"),))] == 0
    assert m[("flowdeck_queue_depth", ())] == 0
    assert m[("flowdeck_runs_finished_total", (("state", "succeeded"),))] >= 1
    assert m[("flowdeck_queue_wait_seconds_count", ())] >= 1
    assert m[("flowdeck_step_duration_seconds_count", (("state", "succeeded"),))] >= 1
    assert m[("flowdeck_scheduler_tick_seconds_count", ())] >= 1
    assert m[("flowdeck_slots_total", ())] == srv.settings.slots
    assert m[("flowdeck_slots_used", ())] == 0
    assert m[("flowdeck_steps_running", ())] == 0
    assert m[("flowdeck_sse_clients", ())] == 0
    created = (
        "flowdeck_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/api/v1/runs"), ("status", "201")),
    )
    assert m[created] >= 1
    status = (
        "flowdeck_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/v1/runs/{run_id}"), ("status", "200")),
    )
    assert m[status] >= 1  # the route template, never the run's id
    assert run_id not in r.text


def test_every_response_carries_a_request_id(srv: LiveServer) -> None:
    with srv.client() as c:
        mine = c.get("/healthz", headers={"X-Request-ID": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        made = c.get("/healthz").headers["x-request-id"]
        assert made and made != c.get("/healthz").headers["x-request-id"]
        # a header that could forge log lines is replaced, not echoed
        odd = c.get("/healthz", headers={"X-Request-ID": "a b\tc"})
        assert odd.headers["x-request-id"] not in ("a b\tc", "")


def scrape(srv: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with srv.client(SCRAPER) as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    return samples(r.text)


def test_webhook_attempts_and_stream_clients_are_counted(srv: LiveServer) -> None:
    token = register_and_login(srv, "hooker")
    success = ("flowdeck_webhook_attempts_total", (("result", "success"),))
    failure = ("flowdeck_webhook_attempts_total", (("result", "failure"),))
    before = scrape(srv)
    with receiver(default=(500, {})) as failing, receiver() as ok, srv.client(token) as c:
        r = c.post(f"{API}/workflows", content=ONE_STEP, headers={"content-type": "text/yaml"})
        assert r.status_code == 201, r.text
        callbacks = [
            {"url": ok.url, "events": ["run.succeeded"]},
            {"url": failing.url, "events": ["run.succeeded"]},
        ]
        r = c.post(f"{API}/runs", json={"workflow": "one@1", "start": True, "callbacks": callbacks})
        assert r.status_code == 201, r.text
        eventually(lambda: ok.received() and failing.received(), what="both deliveries")
        after = eventually(
            lambda: (
                (m := scrape(srv))[success] > before.get(success, 0)
                and m[failure] > before.get(failure, 0)
                and m
            ),
            what="the attempts in the metrics",
        )
        assert after[success] >= before.get(success, 0) + 1

        headers = {"Accept": "text/event-stream"}
        with c.stream("GET", f"{API}/events", headers=headers) as stream:
            assert stream.status_code == 200
            eventually(lambda: scrape(srv)[("flowdeck_sse_clients", ())] >= 1, what="a client")
        eventually(lambda: scrape(srv)[("flowdeck_sse_clients", ())] == 0, what="no client")


def test_stored_bytes_per_user_and_in_total(tmp_path: Path) -> None:
    keep = (
        'name: keep\nversion: "1"\ninputs:\n  data: {type: file}\nsteps:\n  t: {run: [/bin/true]}\n'
    )
    with live_server(make_settings(tmp_path, metrics_token=SCRAPER)) as s:
        token = register_and_login(s, "hoarder")
        with s.client(token) as c:
            r = c.post(
                f"{API}/workflows", content=keep, headers={"content-type": "application/yaml"}
            )
            assert r.status_code == 201, r.text
            run_id = c.post(f"{API}/runs", json={"workflow": "keep@1"}).json()["id"]
            r = c.put(f"{API}/runs/{run_id}/files/data?filename=a.bin", content=b"x" * 1234)
            assert r.status_code == 201, r.text
        with s.client(SCRAPER) as c:
            m = samples(c.get("/metrics").text)
    assert m[("flowdeck_user_stored_bytes", (("user", "hoarder"),))] == 1234
    assert m[("flowdeck_stored_bytes", ())] == 1234
