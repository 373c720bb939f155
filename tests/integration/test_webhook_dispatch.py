"""The webhook dispatcher on a real database with a real receiver: nothing is lost over a
restart, and the address rules are applied again at every delivery."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Event, Run, RunState
from flowdeck.domain.webhooks import Delivery, DeliveryState, Subscription, new_secret
from flowdeck.ids import new_id
from flowdeck.runtime.webhooks import Dispatcher
from flowdeck.services.context import Context, build_context
from tests.helpers import make_settings
from tests.receiver import eventually, receiver


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "webhook_allow_networks": ["127.0.0.1/32"],
        "webhook_retry_base_s": 0.05,
        "webhook_retry_max_s": 0.2,
    }
    return make_settings(tmp_path / "data", **(base | overrides))


@pytest.fixture
def contexts() -> Iterator[list[Context]]:
    made: list[Context] = []
    yield made
    for ctx in made:
        ctx.close()


def open_ctx(contexts: list[Context], settings: Settings, *, send: bool = True) -> Context:
    ctx = build_context(settings)
    contexts.append(ctx)
    if send:
        ctx.start_webhooks()
    return ctx


def owner(ctx: Context) -> Actor:
    now = clock.now()
    user = User(new_id("usr"), new_id("u")[-12:], Role.USER, AccountStatus.ACTIVE, "x", now, now)
    with ctx.store.write() as tx:
        tx.add_user(user)
    return Actor(user.id, user.username, user.role)


def run_event(ctx: Context, actor: Actor) -> str:
    """A run and its first event, written as the services write them."""
    now = clock.now()
    run = Run(new_id("run"), actor.user_id, None, "x/wf@1", RunState.STAGED, now, now)
    with ctx.store.write() as tx:
        tx.add_run(run)
        tx.add_event("run", run.id, "run.staged", now, actor.username, {})
    return run.id


def only_delivery(ctx: Context, sub_id: str) -> Delivery:
    with ctx.store.read() as tx:
        [delivery] = tx.list_deliveries(sub_id)
    return delivery


def test_a_pending_delivery_is_sent_after_a_restart(
    tmp_path: Path, contexts: list[Context]
) -> None:
    settings = settings_for(tmp_path)
    with receiver([(503, {"retry-after": "1"})]) as rec:
        first = open_ctx(contexts, settings)
        actor = owner(first)
        sub = first.webhooks.create(actor, rec.url, ["run.*"])
        run_event(first, actor)
        eventually(lambda: only_delivery(first, sub.id).attempts == 1, what="a first attempt")
        first.close()
        contexts.remove(first)
        assert only_delivery(first, sub.id).state is DeliveryState.PENDING  # closed store
        second = open_ctx(contexts, settings)
        done = eventually(
            lambda: (d := only_delivery(second, sub.id)).state is DeliveryState.SUCCEEDED and d,
            what="the delivery after the restart",
        )
        got = rec.received()
    assert done.attempts == 2 and len(got) == 2
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == done.id


def test_deliveries_written_while_nothing_sends_go_out_at_start(
    tmp_path: Path, contexts: list[Context]
) -> None:
    settings = settings_for(tmp_path)
    with receiver() as rec:
        quiet = open_ctx(contexts, settings, send=False)  # a CLI command, say
        actor = owner(quiet)
        sub = quiet.webhooks.create(actor, rec.url, ["run.staged"])
        run_event(quiet, actor)
        assert only_delivery(quiet, sub.id).state is DeliveryState.PENDING
        quiet.close()
        contexts.remove(quiet)
        server = open_ctx(contexts, settings)
        eventually(
            lambda: only_delivery(server, sub.id).state is DeliveryState.SUCCEEDED,
            what="the delivery",
        )
        assert len(rec.received()) == 1


@pytest.mark.parametrize("host", ["localhost", "2130706433", "127.1", "[::ffff:127.0.0.1]"])
def test_addresses_are_checked_again_at_delivery(
    tmp_path: Path, contexts: list[Context], host: str
) -> None:
    """A subscription made when its name resolved elsewhere (or by an older version):
    the delivery is refused, and nothing reaches the address."""
    settings = settings_for(tmp_path, webhook_allow_networks=[], webhook_max_attempts=1)
    with receiver() as rec:
        ctx = open_ctx(contexts, settings)
        actor = owner(ctx)
        port = rec.url.split(":")[2].split("/")[0]
        now = clock.now()
        sub = Subscription(
            new_id("wh"), actor.user_id, f"http://{host}:{port}/hook", ["*"], None, True,
            new_secret(), now, now,
        )  # fmt: skip
        with ctx.store.write() as tx:
            tx.add_subscription(sub)
        ctx.webhooks.changed()
        run_event(ctx, actor)
        done = eventually(
            lambda: (d := only_delivery(ctx, sub.id)).state is DeliveryState.FAILED and d,
            what="the refused delivery",
        )
        assert rec.received() == []
    assert done.last_status is None and done.last_error is not None
    assert "loopback" in done.last_error


def test_without_subscriptions_events_write_no_deliveries(
    tmp_path: Path, contexts: list[Context]
) -> None:
    ctx = open_ctx(contexts, settings_for(tmp_path), send=False)
    actor = owner(ctx)
    run_event(ctx, actor)
    with ctx.store.write() as tx:
        assert tx.claim_deliveries(clock.now(), clock.now(), 10) == []


@pytest.mark.parametrize(
    ("cert_for", "state"), [("localhost", "succeeded"), ("other.example", "failed")]
)
def test_https_checks_the_certificate_against_the_urls_host(
    tmp_path: Path, contexts: list[Context], cert_for: str, state: str
) -> None:
    """The connection goes to the checked address, yet TLS is verified for the URL's name
    (sent as SNI): a certificate for another name fails the attempt."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_for).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    settings = settings_for(tmp_path, webhook_max_attempts=1)
    with receiver(tls=server_tls, host="localhost") as rec:
        ctx = open_ctx(contexts, settings, send=False)
        dispatcher = Dispatcher(ctx.store, settings, verify=client_tls)
        dispatcher.start()
        ctx.webhooks.dispatcher = dispatcher
        actor = owner(ctx)
        sub = ctx.webhooks.create(actor, rec.url, ["run.staged"])
        run_event(ctx, actor)
        done = eventually(
            lambda: (d := only_delivery(ctx, sub.id)).state is not DeliveryState.PENDING and d,
            what="the delivery",
        )
        got = rec.received()
    assert done.state.value == state, done.last_error
    if state == "succeeded":
        port = rec.url.split(":")[2].split("/")[0]
        assert got[0].headers["host"] == f"localhost:{port}"
    else:
        assert (
            got == [] and done.last_error is not None and "certificate" in done.last_error.lower()
        )


def test_a_delivery_goes_out_at_once_when_another_thread_hands_its_event_on(
    tmp_path: Path, contexts: list[Context]
) -> None:
    """With the scheduler in its own process, committed events reach the listeners in id
    order from whichever thread completes the order: the dispatcher is still woken then,
    not at its next look at the outbox (a minute later)."""
    with receiver() as rec:
        ctx = open_ctx(contexts, settings_for(tmp_path))
        actor = owner(ctx)
        sub = ctx.webhooks.create(actor, rec.url, ["run.staged"])
        held: list[list[Event]] = []
        ctx.store.order = held.append  # committed, not handed on yet
        run_event(ctx, actor)
        assert held and only_delivery(ctx, sub.id).state is DeliveryState.PENDING
        time.sleep(0.3)
        assert rec.received() == []
        hand_on = threading.Thread(target=ctx.store.deliver, args=(held[0],))
        hand_on.start()
        hand_on.join()
        eventually(
            lambda: only_delivery(ctx, sub.id).state is DeliveryState.SUCCEEDED,
            timeout=10,
            what="the delivery",
        )
