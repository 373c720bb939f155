"""The scheduler's committer on the fake store: changes of runs' own rows are merged per
run (later values win) yet every op function still sees what came before it, and a run
owned elsewhere is fenced off."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.runs import Run, RunState
from flowdeck.errors import StoreUnavailable
from flowdeck.runtime.committer import Batch, Committer
from flowdeck.store.base import Tx
from flowdeck.store.fake import FakeStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _store() -> FakeStore:
    store = FakeStore()
    with store.write() as tx:
        tx.add_user(User("u_a", "alice", Role.USER, AccountStatus.ACTIVE, "x", T0, T0))
        for name in ("run_a", "run_b", "run_x"):
            tx.add_run(Run(name, "u_a", None, "inline", RunState.QUEUED, T0, T0))
    return store


def test_run_changes_merge_per_run_and_ops_see_what_came_before() -> None:
    store = _store()
    fenced: list[set[str]] = []
    committer = Committer(store, "inst_1", fenced.append)
    seen: list[RunState] = []

    def look(tx: Tx) -> None:
        run = tx.get_run("run_a")
        assert run is not None
        seen.append(run.state)

    later = T0 + timedelta(seconds=5)
    first = Batch(
        ops=[
            ("run_a", {"state": RunState.RUNNING, "started_at": T0}),
            ("run_b", {"state": RunState.RUNNING}),
            ("run_a", look),
        ],
        steps=[],
        events=[("run", "run_a", "run.running", T0, None, {})],
        fences={"run_a": 1, "run_b": 1},
        claims={"run_a": 0, "run_b": 0},
    )
    second = Batch(
        ops=[
            ("run_a", {"state": RunState.SUCCEEDED, "finished_at": later}),
            ("run_b", {"state": RunState.FAILED}),
            ("run_b", {"state": RunState.SUCCEEDED}),  # the later value wins
        ],
        steps=[],
        events=[("run", "run_a", "run.succeeded", later, None, {})],
        fences={"run_a": 1, "run_b": 1},
    )
    # run_x is claimed by someone else first: its changes are dropped
    with store.write() as tx:
        assert tx.claim_run("run_x", "inst_2", 0) == 1
    third = Batch(
        ops=[("run_x", {"state": RunState.RUNNING})],
        steps=[],
        events=[("run", "run_x", "run.running", later, None, {})],
        fences={"run_x": 1},
        claims={"run_x": 0},
    )
    committer._pending = [first, second, third]  # one commit of three batches
    stale = committer._commit(committer._pending, 1)
    assert stale == {"run_x"}
    assert seen == [RunState.RUNNING]  # the op ran after the change before it
    with store.read() as tx:
        a, b, x = tx.get_run("run_a"), tx.get_run("run_b"), tx.get_run("run_x")
        events = tx.list_events(subject_kind="run", limit=10)
    assert a is not None and b is not None and x is not None
    assert (a.state, a.started_at, a.finished_at) == (RunState.SUCCEEDED, T0, later)
    assert b.state is RunState.SUCCEEDED
    assert (x.state, x.owner_instance) == (RunState.QUEUED, "inst_2")
    assert [(e.subject_id, e.type) for e in events] == [
        ("run_a", "run.running"),
        ("run_a", "run.succeeded"),
    ]
    committer.close()


class FlakyStore(FakeStore):
    """A fake store whose database goes away: writes (and, while ``down``, reads) raise
    StoreUnavailable; with ``cut_after_commit`` a write commits and then raises, as a
    connection cut during its COMMIT does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.cut_after_commit = 0
        self.writes = 0

    def read(self) -> AbstractContextManager[Tx]:
        if self.down:
            raise StoreUnavailable("the database is unavailable: stopped")
        return super().read()

    @contextmanager
    def _flaky_write(self) -> Iterator[Tx]:
        if self.down:
            raise StoreUnavailable("the database is unavailable: stopped")
        with super().write() as tx:
            yield tx
        self.writes += 1
        if self.cut_after_commit:
            self.cut_after_commit -= 1
            raise StoreUnavailable("the database is unavailable: connection cut")

    def write(self) -> AbstractContextManager[Tx]:
        return self._flaky_write()


def _flaky() -> FlakyStore:
    store = FlakyStore()
    with store.write() as tx:
        tx.add_user(User("u_a", "alice", Role.USER, AccountStatus.ACTIVE, "x", T0, T0))
        for name in ("run_a", "run_b"):
            run = Run(name, "u_a", None, "inline", RunState.QUEUED, T0, T0)
            tx.add_run(dataclasses.replace(run, owner_instance="inst_1", fence=1))
    return store


def _change(run_id: str, state: RunState, at: datetime) -> Batch:
    return Batch(
        ops=[(run_id, {"state": state})],
        steps=[],
        events=[("run", run_id, f"run.{state.value}", at, None, {})],
        fences={run_id: 1},
    )


def test_batches_an_outage_kept_out_are_committed_in_order_once_it_ends() -> None:
    store = _flaky()
    committer = Committer(store, "inst_1", lambda _: None)
    store.down = True
    first = committer.submit(_change("run_a", RunState.RUNNING, T0))
    time.sleep(0.3)  # tried and held, more than once
    assert not first.done()  # held, not dropped
    second = committer.submit(_change("run_a", RunState.SUCCEEDED, T0 + timedelta(seconds=1)))
    third = committer.submit(_change("run_b", RunState.RUNNING, T0 + timedelta(seconds=2)))
    store.down = False
    assert first.result(5) == second.result(5) == third.result(5) == set()
    with store.read() as tx:
        a, b = tx.get_run("run_a"), tx.get_run("run_b")
        events = tx.list_events(subject_kind="run", limit=10)
    assert a is not None and a.state is RunState.SUCCEEDED  # applied in order
    assert b is not None and b.state is RunState.RUNNING
    assert [(e.subject_id, e.type) for e in events] == [
        ("run_a", "run.running"),
        ("run_a", "run.succeeded"),
        ("run_b", "run.running"),
    ]
    committer.close()


def test_a_commit_whose_outcome_was_lost_is_not_applied_twice() -> None:
    store = _flaky()
    with store.write() as tx:  # the instance's row holds the commit mark
        tx.add_instance(ServerInstance("inst_1", "h", 1, None, T0, T0))
    committer = Committer(store, "inst_1", lambda _: None)
    before = store.writes
    store.cut_after_commit = 1
    done = committer.submit(_change("run_a", RunState.RUNNING, T0))
    assert done.result(5) == set()
    with store.read() as tx:
        events = tx.list_events(subject_kind="run", limit=10)
    assert [(e.subject_id, e.type) for e in events] == [("run_a", "run.running")]
    assert store.writes == before + 1  # committed once, then found by its mark
    committer.close()


def test_a_batch_that_cannot_be_committed_costs_only_itself() -> None:
    store = _flaky()
    committer = Committer(store, "inst_1", lambda _: None)

    def broken(tx: Tx) -> None:
        raise ValueError("a bug")

    store.down = True  # both gather, then go in one transaction
    good = committer.submit(_change("run_a", RunState.RUNNING, T0))
    bad = committer.submit(Batch(ops=[("run_b", broken)], steps=[], events=[], fences={}))
    time.sleep(0.2)
    store.down = False
    assert good.result(5) == set()
    with pytest.raises(ValueError, match="a bug"):
        bad.result(5)
    with store.read() as tx:
        a = tx.get_run("run_a")
    assert a is not None and a.state is RunState.RUNNING
    committer.close()


def test_each_batch_hears_only_of_its_own_runs_fenced_off() -> None:
    store = _flaky()
    with store.write() as tx:  # another instance took run_b over
        assert tx.claim_runs("inst_2", {"run_b": 1}) == set()
    fenced: list[set[str]] = []
    committer = Committer(store, "inst_1", fenced.append)
    store.down = True  # both gather, then go in one transaction
    mine = committer.submit(_change("run_a", RunState.RUNNING, T0))
    theirs = committer.submit(_change("run_b", RunState.RUNNING, T0))
    time.sleep(0.2)
    store.down = False
    assert theirs.result(5) == {"run_b"}
    assert mine.result(5) == set()  # run_a's change went in: its caller hears no refusal
    assert fenced == [{"run_b"}]
    with store.read() as tx:
        a = tx.get_run("run_a")
    assert a is not None and a.state is RunState.RUNNING
    committer.close()
