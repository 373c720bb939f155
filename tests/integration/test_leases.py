"""Ownership of active runs: instance leases in the store (one contract for every backend),
fenced commits that reject a stale owner, and draining on shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.workflows import Visibility
from flowdeck.errors import Conflict
from flowdeck.services.context import Context, build_context
from flowdeck.store import Store
from tests.helpers import STRONG, make_settings
from tests.integration.test_store_contract import store, user, workflow  # noqa: F401

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_instances_heartbeat_and_claims_are_compare_and_set(store: Store) -> None:  # noqa: F811
    me = ServerInstance("inst_a", "host-1", 4242, 99, T0, T0)
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_a", "u_alice", "wf_1", "alice/wf@1", RunState.RUNNING, T0, T0))
        tx.add_instance(me)
    with store.write() as tx:
        assert tx.heartbeat("inst_a", T0 + timedelta(seconds=5))
        assert tx.claim_run("run_a", "inst_a", 0) == 1
        assert tx.claim_run("run_a", "inst_b", 0) is None  # the fence moved on: refused
        assert tx.run_fences(["run_a", "run_x"]) == {"run_a": ("inst_a", 1)}
        tx.stop_instance("inst_a", T0 + timedelta(seconds=6))
        assert not tx.heartbeat("inst_a", T0 + timedelta(seconds=7))  # stopped for good
    with store.read() as tx:
        (found,) = tx.list_instances()
        assert found.heartbeat_at == T0 + timedelta(seconds=5)
        assert found.stopped_at == T0 + timedelta(seconds=6)
        assert tx.get_run("run_a").fence == 1  # type: ignore[union-attr]


def test_a_heartbeat_says_what_the_instances_users_hold(store: Store) -> None:  # noqa: F811
    """(For quotas across servers.)  A heartbeat without holdings keeps the last said."""
    with store.write() as tx:
        tx.add_instance(ServerInstance("inst_a", "host-1", 4242, 99, T0, T0))
    with store.write() as tx:
        assert tx.heartbeat("inst_a", T0 + timedelta(seconds=1), {"u_alice": [2, 1.5]})
    with store.write() as tx:
        assert tx.heartbeat("inst_a", T0 + timedelta(seconds=2))
    with store.read() as tx:
        (found,) = tx.list_instances()
        assert found.holdings == {"u_alice": [2, 1.5]}
    with store.write() as tx:
        assert tx.heartbeat("inst_a", T0 + timedelta(seconds=3), {})
    with store.read() as tx:
        assert tx.list_instances()[0].holdings == {}


def test_claims_in_one_statement_refuse_only_the_runs_taken_first(store: Store) -> None:  # noqa: F811
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        for name in ("a", "b", "c"):
            tx.add_run(Run(f"run_{name}", "u_alice", "wf_1", "alice/wf@1", RunState.QUEUED, T0, T0))
    with store.write() as tx:
        assert tx.claim_runs("inst_a", {"run_a": 0, "run_b": 0}) == set()  # all held
    with store.write() as tx:
        assert tx.claim_run("run_c", "inst_b", 0) == 1  # another instance was first
    with store.write() as tx:
        # run_a at fence 1 (ours to move on), run_c no longer at 0: only run_c is refused
        assert tx.claim_runs("inst_a", {"run_a": 1, "run_c": 0}) == {"run_c"}
        assert tx.run_fences(["run_a", "run_b", "run_c"]) == {
            "run_a": ("inst_a", 2),
            "run_b": ("inst_a", 1),
            "run_c": ("inst_b", 1),
        }


def test_many_runs_change_in_one_call(store: Store) -> None:  # noqa: F811
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_runs(
            [
                Run(
                    f"run_{n}", "u_alice", "wf_1", "alice/wf@1", RunState.QUEUED, T0, T0, tags=["x"]
                )
                for n in "ab"
            ]
        )
    later = T0 + timedelta(seconds=3)
    with store.write() as tx:
        tx.set_runs(
            {
                "run_a": {"state": RunState.RUNNING, "started_at": later},
                "run_b": {"state": RunState.SUCCEEDED, "finished_at": later, "tags": ["y"]},
            }
        )
    with store.read() as tx:
        a, b = tx.get_run("run_a"), tx.get_run("run_b")
    assert a is not None and b is not None
    assert (a.state, a.started_at, a.tags) == (RunState.RUNNING, later, ["x"])
    assert (b.state, b.finished_at, b.tags) == (RunState.SUCCEEDED, later, ["y"])


def test_queued_runs_of_other_instances_are_found_by_owner(store: Store) -> None:  # noqa: F811
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        rows = {
            "run_1": (RunState.QUEUED, None),  # queued by a server without a scheduler
            "run_2": (RunState.QUEUED, "inst_live"),
            "run_3": (RunState.QUEUED, "inst_gone"),
            "run_4": (RunState.RUNNING, "inst_gone"),  # active runs are taken over apart
            "run_5": (RunState.STAGED, None),
        }
        for run_id, (run_state, owner) in rows.items():
            tx.add_run(
                Run(
                    run_id, "u_alice", "wf_1", "alice/wf@1", run_state, T0, T0, owner_instance=owner
                )
            )
    with store.read() as tx:
        gone = tx.queued_runs(exclude_owners=["inst_live"], unowned=False)
        all_free = tx.queued_runs(exclude_owners=["inst_live"], unowned=True)
        nobody_live = tx.queued_runs(exclude_owners=[], unowned=True)
    assert [r.id for r in gone] == ["run_3"]
    assert [r.id for r in all_free] == ["run_1", "run_3"]
    assert [r.id for r in nobody_live] == ["run_1", "run_2", "run_3"]


def test_a_users_next_queued_runs_come_in_admission_order_from_the_store(store: Store) -> None:  # noqa: F811
    """(The scheduler's window refills from it.)  Admin priority, then the user's priority,
    highest first, then age, then id; only that user's queued runs owned by the instances
    given (and, asked, by none); at most ``limit``."""
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_workflow(workflow("wf_1", "alice"))
        rows = [
            # id, owner, state, owner instance, admin priority, priority, queued at
            ("run_a", "u_alice", RunState.QUEUED, "inst_me", 0, 0, t2),
            ("run_b", "u_alice", RunState.QUEUED, "inst_gone", 0, 0, t1),
            ("run_c", "u_alice", RunState.QUEUED, "inst_me", 0, 5, t2),
            ("run_d", "u_alice", RunState.QUEUED, None, 1, -5, t2),
            ("run_e", "u_alice", RunState.QUEUED, "inst_me", 0, 0, t1),  # (as run_b: by id)
            ("run_f", "u_alice", RunState.QUEUED, "inst_live", 9, 9, T0),  # not ours
            ("run_g", "u_alice", RunState.RUNNING, "inst_me", 9, 9, T0),  # not queued
            ("run_h", "u_bob", RunState.QUEUED, "inst_me", 9, 9, T0),  # another user
        ]
        for run_id, owner, run_state, inst, admin, prio, at in rows:
            tx.add_run(
                Run(
                    run_id,
                    owner,
                    "wf_1",
                    "alice/wf@1",
                    run_state,
                    T0,
                    T0,
                    owner_instance=inst,
                    priority=prio,
                    admin_priority=admin,
                    queued_at=at,
                )
            )
    mine = ["inst_me", "inst_gone"]
    with store.read() as tx:
        all_mine = tx.next_queued_runs("u_alice", instances=mine, unowned=True, limit=10)
        owned = tx.next_queued_runs("u_alice", instances=mine, unowned=False, limit=10)
        first = tx.next_queued_runs("u_alice", instances=mine, unowned=True, limit=2)
        only_me = tx.next_queued_runs("u_alice", instances=["inst_me"], unowned=False, limit=10)
        owners = tx.queued_owners(exclude_owners=["inst_me", "inst_live"], unowned=True)
    assert [r.id for r in all_mine] == ["run_d", "run_c", "run_b", "run_e", "run_a"]
    assert [r.id for r in owned] == ["run_c", "run_b", "run_e", "run_a"]
    assert [r.id for r in first] == ["run_d", "run_c"]
    assert [r.id for r in only_me] == ["run_c", "run_e", "run_a"]
    assert owners == {("u_alice", "inst_gone"), ("u_alice", None)}
    with store.write() as tx:
        tx.set_queued_waiting("u_alice", "quota: 1 of 1", instances=mine, unowned=False)
    with store.read() as tx:
        waiting = {r: (got.waiting if (got := tx.get_run(r)) else "") for r, *_ in rows}
    assert {r for r, why in waiting.items() if why} == {"run_a", "run_b", "run_c", "run_e"}
    with store.write() as tx:
        tx.set_queued_waiting("u_alice", None, instances=mine, unowned=False)
    with store.read() as tx:
        after = [tx.get_run(r) for r, *_ in rows]
    assert all(got is not None and got.waiting is None for got in after)


def test_a_lease_ends_when_stopped_expired_or_its_process_is_gone() -> None:
    import os

    from flowdeck.executors.wire import process_start_time

    alive = ServerInstance("i", "h", os.getpid(), process_start_time(os.getpid()), T0, T0)
    assert alive.lease_valid(T0 + timedelta(seconds=29), 30, "h")
    assert not alive.lease_valid(T0 + timedelta(seconds=31), 30, "h")  # no heartbeat
    stopped = ServerInstance("i", "h", os.getpid(), None, T0, T0, stopped_at=T0)
    assert not stopped.lease_valid(T0, 30, "h")
    reused = ServerInstance("i", "h", os.getpid(), 1, T0, T0)  # same pid, another process
    assert not reused.lease_valid(T0, 30, "h")
    elsewhere = ServerInstance("i", "other-host", 1, 1, T0, T0)  # cannot be checked: lease
    assert elsewhere.lease_valid(T0, 30, "h")


# -- two servers on one database -----------------------------------------------------------
def chain(name: str, seconds: str) -> str:
    return (
        f'name: {name}\nversion: "1"\nsteps:\n  a: {{run: [sleep, "{seconds}"]}}\n'
        "  b: {run: [/bin/true], needs: [a]}\n"
    )


SLEEPY = chain("sleepy", "30")
TWO = chain("two", "0.5")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Callable[..., Context]]:
    made: list[Context] = []

    def make(**overrides: Any) -> Context:
        ctx = build_context(make_settings(tmp_path / "data", **overrides))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def actor_in(ctx: Context) -> Actor:
    with ctx.store.read() as tx:
        u = tx.get_user_by_name("owner")
    if u is None:
        u = ctx.accounts.create_user("owner", STRONG)
    return Actor(u.id, u.username, u.role)


def wait_for(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return value


def step_state(ctx: Context, actor: Actor, run_id: str, name: str) -> str | None:
    steps = {s.name: s.state.value for s in ctx.runs.get(actor, run_id).steps}
    return steps.get(name)


def state(ctx: Context, actor: Actor, run_id: str) -> str:
    return ctx.runs.get(actor, run_id).run.state.value


def test_a_stale_owner_is_fenced_off_and_the_new_owner_carries_on(
    setup: Callable[..., Context],
) -> None:
    a = setup(lease_ttl_s=3600)  # A's own heartbeat will not come during the test
    a.start_scheduler()
    actor = actor_in(a)
    a.workflows.push_spec(actor, SLEEPY.encode(), Visibility.PRIVATE)
    run_id = a.runs.create(actor, "sleepy@1", start=True).id
    wait_for(lambda: step_state(a, actor, run_id, "a") == "running")
    # A stops heartbeating (a pause, a partition): its lease runs out
    assert a.runs.scheduler is not None
    with a.store.write() as tx:
        tx.conn.execute(  # type: ignore[attr-defined]
            sa.text("UPDATE instances SET heartbeat_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(hours=1), "i": a.runs.scheduler.instance_id},
        )
    b = setup()
    b.start_scheduler()  # takes the run over, adopting its running step
    assert b.runs.scheduler is not None
    wait_for(lambda: run_id in b.runs.scheduler.active)  # type: ignore[union-attr]
    with b.store.read() as tx:
        run = tx.get_run(run_id)
    assert run is not None and run.owner_instance == b.runs.scheduler.instance_id
    # the stale owner's change is refused and changes nothing
    with pytest.raises(Conflict):
        a.runs.control(actor, run_id, "pause", mode="freeze")
    assert state(b, actor, run_id) == "running"
    assert run_id not in a.runs.scheduler.active  # A let go
    # the new owner acts on the run and its adopted step
    b.runs.control(actor, run_id, "stop", grace_s=1)
    wait_for(lambda: state(b, actor, run_id) == "cancelled")
    events = b.events.find(actor, run_id=run_id, limit=1000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert not any(e.type == "run.paused" for e in events)


def test_drain_lets_running_steps_finish_and_starts_nothing_new(
    setup: Callable[..., Context],
) -> None:
    a = setup(drain=True)
    a.start_scheduler()
    actor = actor_in(a)
    a.workflows.push_spec(actor, TWO.encode(), Visibility.PRIVATE)
    run_id = a.runs.create(actor, "two@1", start=True).id
    wait_for(lambda: step_state(a, actor, run_id, "a") == "running")
    a.close()  # SIGTERM with --drain: waits for step a
    view = a.runs.get(actor, run_id)
    steps = {s.name: s.state.value for s in view.steps}
    assert steps == {"a": "succeeded", "b": "pending"} and view.run.state is RunState.RUNNING
    b = setup()
    b.start_scheduler()  # the next start goes on with b
    wait_for(lambda: state(b, actor, run_id) == "succeeded")


def _expire(ctx: Context) -> None:
    """The instance of ``ctx`` missed its heartbeats (a pause, a partition) as others see it."""
    assert ctx.runs.scheduler is not None
    with ctx.store.write() as tx:
        tx.conn.execute(  # type: ignore[attr-defined]
            sa.text("UPDATE instances SET heartbeat_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(hours=1), "i": ctx.runs.scheduler.instance_id},
        )


def test_a_run_queued_through_an_instance_stays_its_own_until_its_lease_ends(
    setup: Callable[..., Context],
) -> None:
    a = setup(lease_ttl_s=3600, slots=1)
    a.start_scheduler()
    actor = actor_in(a)
    for spec in (SLEEPY, TWO):
        a.workflows.push_spec(actor, spec.encode(), Visibility.PRIVATE)
    busy = a.runs.create(actor, "sleepy@1", start=True).id
    wait_for(lambda: step_state(a, actor, busy, "a") == "running")  # A's only slot
    waiting = a.runs.create(actor, "two@1", start=True)
    assert a.runs.scheduler is not None
    # queued and A's already: A starts it without first committing a claim
    assert (waiting.owner_instance, waiting.fence) == (a.runs.scheduler.instance_id, 1)
    b = setup(lease_ttl_s=3600)
    b.start_scheduler()
    sched_b = b.runs.scheduler
    assert sched_b is not None
    # A's lease holds: B leaves A's running and queued runs alone
    assert {busy, waiting.id}.isdisjoint({*sched_b.active, *sched_b.queued})
    time.sleep(0.3)
    assert state(a, actor, waiting.id) == "queued"
    _expire(a)
    sched_b.call(sched_b._heartbeat)  # B's next heartbeat takes both over
    wait_for(lambda: state(b, actor, waiting.id) == "succeeded")
    with b.store.read() as tx:
        taken = tx.get_run(waiting.id)
    assert taken is not None
    assert (taken.owner_instance, taken.fence) == (sched_b.instance_id, 2)  # claimed by B
    b.runs.control(actor, busy, "kill")
    wait_for(lambda: state(b, actor, busy) == "killed")


def test_an_instance_unsure_of_its_lease_starts_no_step_before_its_commit(
    setup: Callable[..., Context], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    a = setup(lease_ttl_s=3600, slots=1)
    a.start_scheduler()
    sched = a.runs.scheduler
    assert sched is not None
    actor = actor_in(a)
    a.workflows.push_spec(actor, SLEEPY.encode(), Visibility.PRIVATE)
    touch = (
        f'name: touch\nversion: "1"\nsteps:\n  a: {{run: [/bin/sh, -c, "echo x >> {marker}"]}}\n'
    )
    a.workflows.push_spec(actor, touch.encode(), Visibility.PRIVATE)
    busy = a.runs.create(actor, "sleepy@1", start=True).id
    wait_for(lambda: step_state(a, actor, busy, "a") == "running")
    waiting = a.runs.create(actor, "touch@1", start=True).id
    # A's renewals stopped an hour ago (it was paused) and another instance took the
    # queued run over meanwhile
    sched.lease_renewed_at = datetime.now(UTC) - timedelta(hours=1)
    with a.store.write() as tx:
        assert tx.claim_run(waiting, "inst_other", 1) == 2
    a.runs.control(actor, busy, "kill")  # A's slot frees: A admits the run it thinks its own
    wait_for(lambda: state(a, actor, busy) == "killed")
    wait_for(lambda: waiting not in sched.queued)
    time.sleep(0.5)
    # A waited for its commit, which was refused: the step never started, nothing changed
    assert not marker.exists()
    assert waiting not in sched.active
    with a.store.read() as tx:
        run = tx.get_run(waiting)
    assert run is not None and run.state is RunState.QUEUED
    assert (run.owner_instance, run.fence) == ("inst_other", 2)
