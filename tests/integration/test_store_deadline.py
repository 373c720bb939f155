"""PostgreSQL work is bounded client-side (``db_timeout_s``): a call stuck on a database
server that answers nothing fails with StoreUnavailable instead of waiting for ever, the
pool's next call works, and schema migrations are exempt.  ``pg_sleep`` stands in for a
server that does not answer (tests/acceptance/test_crash_faults.py hangs a real one)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from flowdeck.errors import StoreUnavailable
from flowdeck.store.deadline import lift
from flowdeck.store.migrate import upgrade
from flowdeck.store.sql import SqlStore
from flowdeck.store.sql_leases import SqlLeasesMixin


def _sleep(tx: object, seconds: float) -> None:
    assert isinstance(tx, SqlLeasesMixin)
    tx.conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": seconds})


def test_a_transaction_past_the_deadline_is_cut_and_the_next_one_works(pg_url: str) -> None:
    store = SqlStore(pg_url, timeout_s=1)
    try:
        upgrade(store.engine)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"), store.read() as tx:
            _sleep(tx, 30)
        assert time.monotonic() - started < 5  # cut after about 1 s, not 30
        with store.read() as tx:  # the pool hands out a live connection again
            assert tx.list_instances() is not None
        assert store.write_failure is None
    finally:
        store.close()


def test_a_connection_lifted_from_the_deadline_may_take_longer(pg_url: str) -> None:
    store = SqlStore(pg_url, timeout_s=1)
    try:
        with store.engine.begin() as conn:  # as a schema migration does
            lift(conn)
            conn.execute(sa.text("SELECT pg_sleep(2)"))
    finally:
        store.close()
