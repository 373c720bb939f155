"""A server holds at most ``scheduler_window`` queued runs of each user in memory, the rest
waiting in the database: every run still runs, a run queued but not held is killed as
any queued run, quota reasons reach it, and a restart or a take-over runs a queue deeper
than the window (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import RunState
from flowdeck.domain.workflows import Visibility
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.services.context import Context, build_context
from tests.helpers import STRONG, fresh_pg_database, make_settings

BUSY = 'name: busy\nversion: "1"\nsteps:\n  a: {run: [sleep, "60"]}\n'
ONE = 'name: one\nversion: "1"\nsteps:\n  t: {run: ["true"]}\n'
WINDOW = 3


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def setup(tmp_path: Path, database: str | None) -> Iterator[Callable[..., Context]]:
    made: list[Context] = []

    def make(**overrides: Any) -> Context:
        settings = make_settings(
            tmp_path / "data",
            slots=1,
            scheduler_window=WINDOW,
            database_url=database,
            **overrides,
        )
        ctx = build_context(settings)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        with contextlib.suppress(Exception):
            ctx.close()


def actors(ctx: Context) -> list[Actor]:
    found = []
    for name in ("ann", "bob"):
        with ctx.store.read() as tx:
            u = tx.get_user_by_name(name)
        if u is None:
            u = ctx.accounts.create_user(name, STRONG)
            actor = Actor(u.id, u.username, u.role)
            for spec in (BUSY, ONE):
                ctx.workflows.push_spec(actor, spec.encode(), Visibility.PRIVATE)
        found.append(Actor(u.id, u.username, u.role))
    return found


def wait_for(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def state(ctx: Context, actor: Actor, run_id: str) -> RunState:
    return ctx.runs.get(actor, run_id).run.state


def sched_of(ctx: Context) -> Scheduler:
    sched = ctx.runs.scheduler
    assert isinstance(sched, Scheduler)
    return sched


def held(sched: Scheduler) -> dict[str, list[str]]:
    """The queued runs the scheduler holds, by user (asked in its loop)."""

    def look() -> dict[str, list[str]]:
        owners = {r.owner_id for r in sched.queued.values()}
        return {o: [r.id for r in sched.queued.of(o)] for o in owners}

    return sched.call(look)


def test_a_window_of_three_runs_every_run_and_kills_one_left_in_the_store(
    setup: Callable[..., Context],
) -> None:
    ctx = setup(quota_max_active_runs=1)
    ctx.start_scheduler()
    sched = sched_of(ctx)
    ann, bo = actors(ctx)
    busy = ctx.runs.create(ann, "busy@1", start=True).id  # the only slot, ann's one run
    wait_for(lambda: state(ctx, ann, busy) is RunState.RUNNING)
    queued = {
        a.user_id: [ctx.runs.create(a, "one@1", start=True).id for _ in range(15)]
        for a in (ann, bo)
    }
    holding = held(sched)
    assert all(len(ids) <= WINDOW for ids in holding.values())
    assert holding[ann.user_id] == queued[ann.user_id][:WINDOW]  # the first ones, in order
    last = queued[ann.user_id][-1]
    assert last not in sched.queued
    # ann is at her quota: her runs in the store say why they wait, as those held
    for run_id in (queued[ann.user_id][0], last):
        wait_for(lambda r=run_id: ctx.runs.get(ann, r).run.waiting == "quota: 1 of 1 active runs")
    killed = ctx.runs.control(ann, last, "kill")  # queued, not held: answered as any
    assert killed.state is RunState.KILLED
    assert state(ctx, ann, last) is RunState.KILLED
    stopped = ctx.runs.control(bo, queued[bo.user_id][-1], "stop", grace_s=1)
    assert stopped.state is RunState.CANCELLED
    ctx.runs.control(ann, busy, "kill")
    rest = [r for ids in queued.values() for r in ids[:-1]]
    actor_of = {r: a for a in (ann, bo) for r in queued[a.user_id]}
    for run_id in rest:
        wait_for(lambda r=run_id: state(ctx, actor_of[r], r) is RunState.SUCCEEDED)
    assert ctx.runs.get(ann, queued[ann.user_id][-2]).run.waiting is None
    assert state(ctx, ann, last) is RunState.KILLED  # never held again, never run
    assert state(ctx, bo, queued[bo.user_id][-1]) is RunState.CANCELLED


def test_a_restart_with_more_queued_runs_than_the_window_runs_them_all(
    setup: Callable[..., Context],
) -> None:
    first = setup()
    first.start_scheduler()
    ann, bo = actors(first)
    busy = first.runs.create(ann, "busy@1", start=True).id
    wait_for(lambda: state(first, ann, busy) is RunState.RUNNING)
    queued = [first.runs.create(a, "one@1", start=True).id for a in (ann, bo) for _ in range(8)]
    first.close()  # its step goes on under the supervisor; its queued runs wait
    second = setup()
    second.start_scheduler()
    sched = sched_of(second)
    wait_for(lambda: busy in sched.active)
    holding = held(sched)
    assert sorted(holding) == sorted([ann.user_id, bo.user_id])
    assert all(len(ids) == WINDOW for ids in holding.values())
    second.runs.control(ann, busy, "kill")
    for i, run_id in enumerate(queued):
        actor = ann if i < 8 else bo
        wait_for(lambda r=run_id, a=actor: state(second, a, r) is RunState.SUCCEEDED)


def test_a_take_over_after_a_lease_ends_runs_a_queue_deeper_than_the_window(
    setup: Callable[..., Context],
) -> None:
    first = setup(lease_ttl_s=3600)  # its own heartbeat will not come during the test
    first.start_scheduler()
    ann, bo = actors(first)
    busy = first.runs.create(ann, "busy@1", start=True).id
    wait_for(lambda: state(first, ann, busy) is RunState.RUNNING)
    queued = [first.runs.create(a, "one@1", start=True).id for a in (ann, bo) for _ in range(8)]
    second = setup(lease_ttl_s=3600)
    second.start_scheduler()
    sched = sched_of(second)
    assert held(sched) == {}  # the first server's lease holds: its runs are its own
    with first.store.write() as tx:  # it missed its heartbeats (a pause, a partition)
        tx.conn.execute(  # type: ignore[attr-defined]
            sa.text("UPDATE instances SET heartbeat_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(hours=1), "i": sched_of(first).instance_id},
        )
    sched.call(sched._heartbeat)  # the second's next heartbeat takes them over
    wait_for(lambda: busy in sched.active)
    assert all(len(ids) <= WINDOW for ids in held(sched).values())
    second.runs.control(ann, busy, "kill")
    for i, run_id in enumerate(queued):
        actor = ann if i < 8 else bo
        wait_for(lambda r=run_id, a=actor: state(second, a, r) is RunState.SUCCEEDED)
