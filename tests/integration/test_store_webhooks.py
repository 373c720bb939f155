"""The webhook part of the store contract, on the fake, SQLite and PostgreSQL; and the
outbox hook, which writes deliveries in the event's own transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.webhooks import SEALED, Attempt, Delivery, DeliveryState, Subscription
from flowdeck.runtime.webhooks import SecretSealed, signature
from flowdeck.security.vault import Vault
from flowdeck.store import Store, open_store
from flowdeck.store.sql import SqlStore
from tests.helpers import clean_sql_store, make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        yield open_store("memory://")
        return
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def sub(sid: str = "wh_1", owner: str = "u_alice", **changes: object) -> Subscription:
    base = Subscription(sid, owner, "https://example.org/hook", ["run.*"], None, True,
                        "whsec_c2VjcmV0", T0, T0)  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def delivery(did: str, sid: str = "wh_1", due: datetime | None = T0) -> Delivery:
    return Delivery(did, sid, 1, "run.queued", '{"type":"run.queued"}', DeliveryState.PENDING,
                    0, T0, due, T0 + timedelta(days=1), 40)  # fmt: skip


def seed(store: Store, *names: str) -> None:
    with store.write() as tx:
        for name in names or ("alice",):
            tx.add_user(
                User(f"u_{name}", name, Role.USER, AccountStatus.ACTIVE, "$argon2id$x", T0, T0)
            )


def test_subscriptions_round_trip_list_update_delete(store: Store) -> None:
    seed(store, "alice", "bob")
    with store.write() as tx:
        tx.add_subscription(sub("wh_1"))
        tx.add_subscription(sub("wh_2", run_id="run_x", events=["*"]))
        tx.add_subscription(sub("wh_3", owner="u_bob", enabled=False))
    with store.read() as tx:
        assert tx.get_subscription("wh_2") == sub("wh_2", run_id="run_x", events=["*"])
        assert tx.get_subscription("wh_nope") is None
        assert [s.id for s in tx.list_subscriptions("u_alice")] == ["wh_2", "wh_1"]
        assert [s.id for s in tx.list_subscriptions(None)] == ["wh_3", "wh_2", "wh_1"]
        assert [s.id for s in tx.list_subscriptions(None, enabled_only=True)] == ["wh_2", "wh_1"]
        assert [s.id for s in tx.list_subscriptions(None, before_id="wh_3", limit=1)] == ["wh_2"]
    until = T0 + timedelta(hours=1)
    with store.write() as tx:
        changed = tx.update_subscription(
            "wh_1", secret="whsec_bmV3", previous_secret="whsec_c2VjcmV0",
            previous_secret_until=until, enabled=False, disabled_reason="gone",
        )  # fmt: skip
    assert changed is not None and changed.previous_secret_until == until
    assert changed.signing_secrets(T0) == ["whsec_bmV3", "whsec_c2VjcmV0"]
    assert changed.signing_secrets(until) == ["whsec_bmV3"]
    with store.write() as tx:
        tx.add_deliveries([delivery("msg_1")])
        tx.add_attempts([Attempt("msg_1", 1, T0, 500, "HTTP 500", 12.5)])
        assert tx.delete_subscription("wh_1") is True
        assert tx.delete_subscription("wh_1") is False
    with store.read() as tx:
        assert tx.get_delivery("msg_1") is None and tx.list_attempts(["msg_1"]) == []


def test_claims_lease_due_deliveries_of_enabled_subscriptions(store: Store) -> None:
    seed(store)
    later = T0 + timedelta(minutes=5)
    with store.write() as tx:
        tx.add_subscription(sub("wh_1"))
        tx.add_subscription(sub("wh_2", enabled=False))
        tx.add_deliveries(
            [delivery("msg_a"), delivery("msg_b", due=later), delivery("msg_c", "wh_2")]
        )
    lease = T0 + timedelta(minutes=1)
    with store.write() as tx:
        assert tx.next_delivery_due() == T0
        assert [d.id for d in tx.claim_deliveries(T0, lease, 10)] == ["msg_a"]
    with store.write() as tx:
        assert tx.claim_deliveries(T0, lease, 10) == []  # leased
        assert tx.next_delivery_due() == lease
        assert [d.id for d in tx.claim_deliveries(later, later, 1)] == ["msg_a"]
    with store.write() as tx:
        tx.update_delivery(
            "msg_a", state=DeliveryState.SUCCEEDED, attempts=1, next_attempt_at=None,
            last_status=204, finished_at=later,
        )  # fmt: skip
        tx.add_attempts([Attempt("msg_a", 1, later, 204, None, 3.25)])
    with store.read() as tx:
        got = tx.get_delivery("msg_a")
        assert got is not None and got.state is DeliveryState.SUCCEEDED and got.attempts == 1
        assert tx.next_delivery_due() == later  # msg_b; msg_c's subscription is disabled
        assert tx.list_attempts(["msg_a", "msg_b"]) == [Attempt("msg_a", 1, later, 204, None, 3.25)]
        assert [d.id for d in tx.list_deliveries("wh_1")] == ["msg_b", "msg_a"]
        assert [d.id for d in tx.list_deliveries("wh_1", before_id="msg_b")] == ["msg_a"]


def test_the_outbox_is_written_in_the_events_transaction(store: Store, tmp_path: Path) -> None:
    from flowdeck.services.webhooks import Webhooks

    hooks = Webhooks(store, make_settings(tmp_path))
    hooks.install()
    seed(store, "alice", "bob")
    runs = {
        name: Run(f"run_{name}", f"u_{name}", None, "x/wf@1", RunState.STAGED, T0, T0)
        for name in ("alice", "bob")
    }
    with store.write() as tx:
        for run in runs.values():
            tx.add_run(run)
        tx.add_subscription(sub("wh_all", events=["run.*"]))
        tx.add_subscription(sub("wh_run", owner="u_bob", run_id="run_bob", events=["step.failed"]))
    hooks.changed()
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.add_event("run", "run_alice", "run.queued", T0, None, {})
        raise RuntimeError("rolled back")
    with store.write() as tx:
        tx.add_events(
            [
                ("run", "run_alice", "run.queued", T0, None, {}),
                ("run", "run_alice", "step.failed", T0, None, {"step": "a"}),
                ("run", "run_bob", "run.queued", T0, None, {}),
                ("run", "run_bob", "step.failed", T0, "bob", {"step": "b"}),
            ]
        )
    with store.read() as tx:
        all_runs = tx.list_deliveries("wh_all")
        one_run = tx.list_deliveries("wh_run")
    assert [d.event_type for d in all_runs] == ["run.queued"]  # the rolled-back one is gone
    assert [d.event_type for d in one_run] == ["step.failed"]
    assert '"run_id":"run_bob"' in one_run[0].payload


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def test_a_secret_sealed_with_another_key_fails_only_its_deliveries(sql_store: SqlStore) -> None:
    """Another key file than the one the database was written with (a second server set
    up without the shared key): subscriptions still load, so runs and their events go on;
    signing a delivery of that subscription fails, saying why."""
    seed(sql_store)
    sql_store.sealer = Vault([Fernet.generate_key()])
    with sql_store.write() as tx:
        tx.add_subscription(sub())
    sql_store.sealer = Vault([Fernet.generate_key()])  # not the key it was sealed with
    with sql_store.read() as tx:
        (found,) = tx.list_subscriptions(owner_id="u_alice")
    assert found.secret.startswith(SEALED)
    with pytest.raises(SecretSealed, match="cannot be decrypted with the keys of"):
        signature(found, "msg_1", T0, "{}")
