"""The scheduler's committer on the fake store: changes of runs' own rows are merged per
run (later values win) yet every op function still sees what came before it, and a run
owned elsewhere is fenced off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.runs import Run, RunState
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
    stale = committer._commit(committer._pending)
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
