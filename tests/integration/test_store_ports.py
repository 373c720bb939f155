"""The stream-port contract of every store backend: the in-memory fake, SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowdeck.domain.ports import INPUT, OUTPUT
from flowdeck.domain.runs import Run, RunState
from flowdeck.store import Store
from tests.integration.test_store_contract import T0, store, user, workflow

__all__ = ["store"]  # the backend fixture (fake, sqlite, postgres), shared with the contract


def _run(s: Store, run_id: str = "run_1") -> None:
    with s.write() as tx:
        if tx.get_user("u_alice") is None:
            tx.add_user(user("alice"))
            tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run(run_id, "u_alice", "wf_1", "alice/wf@1", RunState.RUNNING, T0, T0))


def test_records_are_numbered_in_order_from_zero(store: Store) -> None:
    _run(store)
    with store.write() as tx:
        port = tx.lock_port("run_1", INPUT, "records")
        assert (port.length, port.closed) == (0, False)
        port = tx.append_records(port, [{"n": 1}, [2, "two"], "three"], T0)
        assert port.length == 3
    with store.write() as tx:
        port = tx.append_records(tx.lock_port("run_1", INPUT, "records"), [None, 5.5], T0)
        assert port.length == 5
    with store.read() as tx:
        got = tx.read_records("run_1", INPUT, "records", 0, 100)
        assert [r.offset for r in got] == [0, 1, 2, 3, 4]
        assert [r.data for r in got] == [{"n": 1}, [2, "two"], "three", None, 5.5]
        assert {r.attempt for r in got} == {None} and got[0].at == T0
        assert [r.offset for r in tx.read_records("run_1", INPUT, "records", 3, 1)] == [3]
        assert tx.read_records("run_1", INPUT, "records", 5, 10) == []
        assert tx.read_records("run_1", OUTPUT, "records", 0, 10) == []  # another direction
        stored = tx.get_port("run_1", INPUT, "records")
        assert stored is not None and stored.length == 5


def test_output_records_carry_their_attempt(store: Store) -> None:
    _run(store)
    with store.write() as tx:
        port = tx.append_records(tx.lock_port("run_1", OUTPUT, "out"), ["a", "b"], T0, 1)
        tx.append_records(port, ["a"], T0, 2)
    with store.read() as tx:
        got = tx.read_records("run_1", OUTPUT, "out", 0, 10)
        assert [(r.offset, r.attempt, r.data) for r in got] == [
            (0, 1, "a"),
            (1, 1, "b"),
            (2, 2, "a"),
        ]


def test_close_is_kept_listed_and_once(store: Store) -> None:
    _run(store)
    later = T0 + timedelta(seconds=5)
    with store.write() as tx:
        tx.lock_port("run_1", OUTPUT, "out")
        closed = tx.close_port("run_1", INPUT, "records", T0)  # created when absent
        assert closed.closed and closed.closed_at == T0 and closed.length == 0
        again = tx.close_port("run_1", INPUT, "records", later)
        assert again.closed_at == T0
    with store.read() as tx:
        ports = tx.list_ports("run_1")
        assert [(p.direction, p.name, p.closed) for p in ports] == [
            ("input", "records", True),
            ("output", "out", False),
        ]
        assert tx.get_port("run_1", INPUT, "nothere") is None
        assert tx.list_ports("run_other") == []


def test_a_failed_transaction_stores_no_records(store: Store) -> None:
    _run(store)
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.append_records(tx.lock_port("run_1", INPUT, "records"), [1, 2], T0)
        raise RuntimeError("boom")
    with store.read() as tx:
        assert tx.read_records("run_1", INPUT, "records", 0, 10) == []
        port = tx.get_port("run_1", INPUT, "records")
        assert port is None or port.length == 0


def test_ports_go_with_their_run(store: Store) -> None:
    _run(store)
    _run(store, "run_2")
    with store.write() as tx:
        tx.append_records(tx.lock_port("run_1", INPUT, "records"), [1], T0)
        tx.append_records(tx.lock_port("run_2", INPUT, "records"), [2], T0)
        assert tx.delete_run("run_1")
    with store.read() as tx:
        assert tx.list_ports("run_1") == []
        assert tx.read_records("run_1", INPUT, "records", 0, 10) == []
        assert [r.data for r in tx.read_records("run_2", INPUT, "records", 0, 10)] == [2]
