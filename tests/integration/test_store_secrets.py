"""The secrets part of the store contract, on the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.secrets import Secret
from flowdeck.errors import NotFound
from flowdeck.store import Store, open_store
from tests.helpers import clean_sql_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        s: Store = open_store("memory://")
    else:
        s = clean_sql_store(request, tmp_path)
    with s.write() as tx:
        for name in ("alice", "bob"):
            tx.add_user(User(f"u_{name}", name, Role.USER, AccountStatus.ACTIVE, "$x", T0, T0))
    yield s
    s.close()


def test_put_creates_then_replaces_keeping_created_at(store: Store) -> None:
    with store.write() as tx:
        assert tx.put_secret(Secret("u_alice", "grid_token", "c1", T0, T0)) is True
    with store.write() as tx:
        assert tx.put_secret(Secret("u_alice", "grid_token", "c2", T1, T1)) is False
    with store.read() as tx:
        got = tx.get_secret("u_alice", "grid_token")
    assert got == Secret("u_alice", "grid_token", "c2", T0, T1)
    assert got is not None and got.updated_at.tzinfo is not None


def test_secrets_are_per_owner(store: Store) -> None:
    with store.write() as tx:
        tx.put_secret(Secret("u_alice", "tok", "a", T0, T0))
        tx.put_secret(Secret("u_bob", "tok", "b", T0, T0))
        tx.put_secret(Secret("u_alice", "cert", "c", T0, T0))
    with store.read() as tx:
        assert [s.name for s in tx.list_secrets("u_alice")] == ["cert", "tok"]
        assert [(s.owner_id, s.name) for s in tx.list_secrets(None)] == [
            ("u_alice", "cert"),
            ("u_alice", "tok"),
            ("u_bob", "tok"),
        ]
        assert [s.ciphertext for s in tx.get_secrets("u_bob", ["tok", "cert", "nope"])] == ["b"]
        assert tx.get_secrets("u_bob", []) == []
        assert tx.get_secret("u_bob", "cert") is None


def test_delete_and_user_deletion(store: Store) -> None:
    with store.write() as tx:
        tx.put_secret(Secret("u_alice", "tok", "a", T0, T0))
        tx.put_secret(Secret("u_bob", "tok", "b", T0, T0))
    with store.write() as tx:
        assert tx.delete_secret("u_alice", "tok") is True
        assert tx.delete_secret("u_alice", "tok") is False
    with store.write() as tx:
        tx.delete_user("u_bob")
    with store.read() as tx:
        assert tx.list_secrets(None) == []


def test_a_rolled_back_put_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.put_secret(Secret("u_alice", "tok", "a", T0, T0))
        raise RuntimeError("abort")
    with store.read() as tx:
        assert tx.get_secret("u_alice", "tok") is None


def test_a_secret_of_a_missing_user_is_refused(store: Store) -> None:
    with pytest.raises(NotFound), store.write() as tx:
        tx.put_secret(Secret("u_nobody", "tok", "a", T0, T0))
