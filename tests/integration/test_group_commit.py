"""Group commit: concurrent writers share transactions, and a bad write fails alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flowdeck.domain.runs import Run, RunState
from flowdeck.errors import AlreadyExists
from flowdeck.store.base import Tx
from flowdeck.store.group import GroupCommit
from flowdeck.store.migrate import upgrade
from flowdeck.store.sql import SqlStore
from tests.integration.test_store_contract import T0, user, workflow


def test_concurrent_writes_commit_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'group.db'}")
    upgrade(store.engine)
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
    group = GroupCommit(store)
    outcomes: dict[str, object] = {}

    def create(run_id: str) -> None:
        run = Run(run_id, "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0)

        def write(tx: object) -> str:
            tx.add_run(run)  # type: ignore[attr-defined]
            tx.add_event("run", run_id, "run.staged", T0, "alice", {})  # type: ignore[attr-defined]
            return run_id

        try:
            outcomes[run_id] = group.write(write)
        except AlreadyExists as exc:
            outcomes[run_id] = exc

    # run_dup is created twice: exactly one of the two fails, nobody else does
    ids = [f"run_{i:03d}" for i in range(60)] + ["run_dup", "run_dup"]
    threads = [threading.Thread(target=create, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(outcomes[i] == i for i in ids[:60])
    with store.read() as tx:
        stored = {r.id for r in tx.list_runs(None, limit=500)}
        events = tx.list_events(subject_kind="run", limit=500)
    assert stored == {*ids}
    assert len(events) == 61  # one per run created, none for the failed duplicate
    assert sorted(e.id for e in events) == [e.id for e in events]
    store.close()


def test_an_error_reaches_its_caller(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'group.db'}")
    upgrade(store.engine)
    group = GroupCommit(store)

    def boom(_tx: object) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        group.write(boom)
    assert group.write(lambda tx: 42) == 42  # the lead was handed back
    store.close()


def test_a_batch_apply_writes_many_items_at_once_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'group.db'}")
    upgrade(store.engine)
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
    batches: list[int] = []

    def apply(tx: Tx, run_ids: list[str]) -> list[str]:
        batches.append(len(run_ids))
        runs = [Run(i, "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0) for i in run_ids]
        tx.add_runs(runs)
        tx.add_events(
            [("run", i, "run.staged", T0, "alice", {"n": n}) for n, i in enumerate(run_ids)]
        )
        return [f"ok {i}" for i in run_ids]

    group: GroupCommit[str] = GroupCommit(store, apply=apply)
    outcomes: dict[int, object] = {}
    ids = [f"run_{i:03d}" for i in range(40)] + ["run_dup", "run_dup"]

    def create(n: int) -> None:
        try:
            outcomes[n] = group.write(ids[n])
        except AlreadyExists as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=create, args=(n,)) for n in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [outcomes[n] for n in range(40)] == [f"ok {i}" for i in ids[:40]]
    assert sum(isinstance(outcomes[n], AlreadyExists) for n in (40, 41)) == 1
    with store.read() as tx:
        stored = {r.id for r in tx.list_runs(None, limit=500)}
        events = tx.list_events(subject_kind="run", limit=500)
    assert stored == {*ids}
    assert len(events) == 41
    assert [e.id for e in events] == list(range(events[0].id, events[0].id + 41))  # no gap
    assert all(e.seq == 1 for e in events)
    store.close()
