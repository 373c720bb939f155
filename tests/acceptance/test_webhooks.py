"""Webhooks through HTTP: real receivers on 127.0.0.1, real runs, signatures verified with
the Standard Webhooks library."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from flowdeck import clock
from tests.helpers import LiveServer, live_server, make_settings, register_and_login, unique
from tests.receiver import eventually, receiver

API = "/api/v1"
TRUE_WF = 'name: hooked\nversion: "1"\nsteps:\n  t:\n    run: [/bin/true]\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("webhooks") / "data",
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
        webhook_retry_base_s=0.05,
        webhook_retry_max_s=0.2,
    )
    with live_server(settings) as server:
        yield server


@contextmanager
def new_user(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, unique("wh"))) as client:
        r = client.post(
            f"{API}/workflows", content=TRUE_WF, headers={"content-type": "application/yaml"}
        )
        assert r.status_code in (200, 201), r.text
        yield client


@pytest.fixture
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    with new_user(srv) as client:
        yield client


def subscribe(c: httpx.Client, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    r = c.post(f"{API}/webhooks", json={"url": url, "events": events, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def new_run(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post(f"{API}/runs", json={"workflow": "hooked@1", **body})
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def deliveries(c: httpx.Client, hook_id: str) -> list[dict[str, Any]]:
    r = c.get(f"{API}/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def finished(c: httpx.Client, hook_id: str, n: int = 1) -> list[dict[str, Any]]:
    """The subscription's deliveries once n of them are no longer pending."""
    return eventually(
        lambda: (
            found
            if len(found := deliveries(c, hook_id)) >= n
            and sum(d["state"] != "pending" for d in found) >= n
            else None
        ),
        what=f"{n} finished deliveries",
    )


def verify(secret: str, request: Any) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


def test_three_failures_then_success_is_one_signed_delivery(
    user: httpx.Client,
) -> None:
    with receiver([(500, {}), (500, {}), (500, {})]) as rec:
        hook = subscribe(user, rec.url, ["run.staged"])
        assert hook["secret"].startswith("whsec_")
        run = new_run(user)
        [delivery] = finished(user, hook["id"])
        got = rec.received()
    assert delivery["state"] == "succeeded"
    assert [a["status"] for a in delivery["attempts"]] == [500, 500, 500, 204]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3, 4]
    assert len(got) == 4
    assert {r.headers["webhook-id"] for r in got} == {delivery["id"]}
    for request in got:
        body = verify(hook["secret"], request)
        assert body["type"] == "run.staged"
        assert body["data"]["run_id"] == run["id"] and body["data"]["seq"] == 1
    assert "secret" not in user.get(f"{API}/webhooks/{hook['id']}").json()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://localhost:8080/",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "ftp://example.org/",
        "http://127.0.0.1./",  # a trailing dot: the same host, fully qualified
        "http://LOCALHOST./",
        "http://localhost.:8080/x",
        "http://api.localhost./",
        "http://0x7f.1./",
        "http://10.0.0.1../",
    ],
)
def test_internal_targets_are_refused_without_an_allowlist(server: LiveServer, url: str) -> None:
    with server.client(register_and_login(server, unique("ssrf"))) as c:
        r = c.post(f"{API}/webhooks", json={"url": url, "events": ["*"]})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "url_refused"
        assert url in error["message"] and error["details"]["reason"]
        assert c.get(f"{API}/webhooks").json()["items"] == []  # nothing was made
        r = c.post(
            f"{API}/runs",
            json={"workflow": "anything@1", "callbacks": [{"url": url, "events": ["*"]}]},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "url_refused"


def test_a_redirect_to_loopback_is_not_followed(user: httpx.Client) -> None:
    with receiver() as inside, receiver(default=(302, {})) as rec:
        rec.default = (302, {"location": inside.url})
        hook = subscribe(user, rec.url, ["run.staged"])
        new_run(user)
        first = eventually(
            lambda: (d := deliveries(user, hook["id"])) and d[0]["attempts"] and d[0],
            what="a first attempt",
        )
        attempt = first["attempts"][0]
        assert attempt["status"] == 302 and "not followed" in attempt["error"]
        user.patch(f"{API}/webhooks/{hook['id']}", json={"enabled": False})
        assert inside.received() == []


def test_run_callbacks_receive_the_runs_state_changes(user: httpx.Client) -> None:
    with receiver() as rec:
        run = new_run(user, start=True, callbacks=[{"url": rec.url, "events": ["run.*"]}])
        [callback] = run["callbacks"]
        assert callback["secret"].startswith("whsec_")

        def bodies_once_done() -> list[dict[str, Any]] | None:
            bodies = [r.json() for r in rec.received()]
            return bodies if "run.succeeded" in {b["type"] for b in bodies} else None

        bodies = eventually(bodies_once_done, what="run.succeeded")
        requests = rec.received()
    types = [b["type"] for b in bodies]
    assert set(types) == {"run.staged", "run.queued", "run.running", "run.succeeded"}
    assert len(types) == 4  # step.* events are not asked for
    assert {b["data"]["run_id"] for b in bodies} == {run["id"]}
    for request in requests:
        verify(callback["secret"], request)
    hook = user.get(f"{API}/webhooks/{callback['id']}").json()
    assert hook["run_id"] == run["id"] and hook["events"] == ["run.*"]


def test_410_disables_the_subscription(user: httpx.Client) -> None:
    with receiver(default=(410, {})) as rec:
        hook = subscribe(user, rec.url, ["run.staged"])
        new_run(user)
        [delivery] = finished(user, hook["id"])
        assert delivery["state"] == "failed" and delivery["last_status"] == 410
        after = user.get(f"{API}/webhooks/{hook['id']}").json()
        assert after["enabled"] is False and "410" in after["disabled_reason"]
        new_run(user)
        assert len(deliveries(user, hook["id"])) == 1  # nothing more for a disabled one
        assert len(rec.received()) == 1


def test_retry_after_is_honoured(srv: LiveServer, user: httpx.Client) -> None:
    frozen = clock.FrozenClock(datetime.now(UTC))
    with receiver([(429, {"retry-after": "120"})]) as rec, clock.use(frozen):
        hook = subscribe(user, rec.url, ["run.staged"])
        new_run(user)
        first = eventually(
            lambda: (d := deliveries(user, hook["id"])) and d[0]["attempts"] and d[0],
            what="a first attempt",
        )
        attempt = first["attempts"][0]
        assert attempt["status"] == 429 and first["state"] == "pending"
        at = datetime.fromisoformat(attempt["at"])
        assert datetime.fromisoformat(first["next_attempt_at"]) == at + timedelta(seconds=120)
        srv.ctx.webhooks.wake()  # nothing is due yet: no second attempt
        frozen.advance(119)
        srv.ctx.webhooks.wake()
        assert len(rec.received()) == 1
        frozen.advance(1)
        srv.ctx.webhooks.wake()
        [delivery] = finished(user, hook["id"])
    assert delivery["state"] == "succeeded" and len(rec.received()) == 2


def test_another_user_sees_nothing_of_a_subscription(srv: LiveServer, user: httpx.Client) -> None:
    with receiver() as rec:
        hook = subscribe(user, rec.url, ["run.staged"])
        run = new_run(user)
        [delivery] = finished(user, hook["id"])
    base = f"{API}/webhooks/{hook['id']}"
    with new_user(srv) as other:
        assert other.get(base).status_code == 404
        assert hook["id"] not in {h["id"] for h in other.get(f"{API}/webhooks").json()["items"]}
        assert other.get(f"{base}/deliveries").status_code == 404
        assert other.post(f"{base}/deliveries/{delivery['id']}/redeliver").status_code == 404
        assert other.post(f"{base}/rotate-secret").status_code == 404
        assert other.patch(base, json={"enabled": False}).status_code == 404
        assert other.delete(base).status_code == 404
        r = other.post(
            f"{API}/webhooks", json={"url": rec.url, "events": ["*"], "run_id": run["id"]}
        )
        assert r.status_code == 404  # another user's run
    assert user.get(base).json()["enabled"] is True


def test_redelivery_sends_the_same_webhook_id_again(user: httpx.Client) -> None:
    with receiver() as rec:
        hook = subscribe(user, rec.url, ["run.staged"])
        new_run(user)
        [delivery] = finished(user, hook["id"])
        r = user.post(f"{API}/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
        assert r.status_code == 202, r.text
        eventually(lambda: len(rec.received()) == 2, what="the redelivery")
        [again] = finished(user, hook["id"])
        got = rec.received()
    assert again["state"] == "succeeded" and len(again["attempts"]) == 2
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == delivery["id"]
    assert got[0].body == got[1].body


def test_rotation_signs_with_both_secrets(user: httpx.Client) -> None:
    with receiver() as rec:
        hook = subscribe(user, rec.url, ["run.staged"])
        r = user.post(f"{API}/webhooks/{hook['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != hook["secret"]
        assert rotated["previous_secret_expires_at"] is not None
        new_run(user)
        finished(user, hook["id"])
        [request] = rec.received()
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify(hook["secret"], request)
    verify(rotated["secret"], request)


def test_bad_subscriptions_are_refused_and_change_nothing(user: httpx.Client) -> None:
    with receiver() as rec:
        for body in (
            {"url": rec.url, "events": []},
            {"url": rec.url, "events": ["run..x"]},
            {"url": "not a url", "events": ["*"]},
            {"url": rec.url, "events": ["*"], "run_id": "run_nope"},
            {"url": rec.url, "events": ["*"], "extra": 1},
        ):
            r = user.post(f"{API}/webhooks", json=body)
            assert r.status_code in (404, 422), r.text
            assert r.json()["error"]["message"]
        assert user.get(f"{API}/webhooks").json()["items"] == []
