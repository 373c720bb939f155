"""The scheduler holds a bounded window of each user's queued runs, the rest waiting in
the store: it admits every run, in exactly the order it does holding all of them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowdeck import clock
from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.workflows import Visibility, Workflow
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.fake import FakeExecutor
from flowdeck.runtime.active import ActiveRun
from flowdeck.runtime.run_queue import RunQueue
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.store.fake import FakeStore
from tests.helpers import make_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OWNERS = ("u_alice", "u_bob")


class CountingQueue(RunQueue):
    """Remembers the most runs of one owner it ever held."""

    most = 0

    def hold(self, run: Run) -> bool:
        held = super().hold(run)
        self.most = max(self.most, len(self.of(run.owner_id)))
        return held


class Watched(Scheduler):
    """Remembers the order in which it admits runs."""

    admitted: list[str]

    def _activate(self, run: Run, fresh: bool = True) -> ActiveRun | None:
        self.admitted.append(run.id)
        return super()._activate(run, fresh)


def the_runs() -> list[Run]:
    """60 runs of two users, interleaved in time, some with a priority of their own."""
    runs = []
    for i in range(60):
        at = T0 + timedelta(seconds=i)
        owner = OWNERS[i % 2]
        priority = 5 if i % 7 == 0 else (-1 if i % 5 == 0 else 0)
        runs.append(
            Run(
                f"run_{i:03d}",
                owner,
                "wf_one",
                "alice/one@1",
                RunState.QUEUED,
                at,
                at,
                priority=priority,
                queued_at=at,
            )
        )
    # submitted in an order of their own: later runs may come before held ones
    return runs[::3] + runs[1::3] + runs[2::3]


def fill(store: FakeStore) -> None:
    with store.write() as tx:
        for owner in OWNERS:
            name = owner.removeprefix("u_")
            tx.add_user(User(owner, name, Role.USER, AccountStatus.ACTIVE, "$argon2id$x", T0, T0))
        spec = {"name": "one", "version": "1", "steps": {"t": {"run": ["true"]}}}
        tx.add_workflow(
            Workflow(
                "wf_one",
                "u_alice",
                "alice",
                "one",
                "1",
                "d",
                "h" * 64,
                spec,
                "",
                False,
                Visibility.PUBLIC,
                False,
                T0,
            )
        )


def wait_for(check: Callable[[], Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def admit_all(tmp: Path, window: int, submit: bool) -> tuple[list[str], int]:
    """The order in which a scheduler with ``window`` admits the runs (handed over one by
    one as submitted with ``submit``, else found queued in the store at its start), and
    the most runs of one user it held."""
    frozen = clock.FrozenClock(T0 + timedelta(hours=1))

    def one_second(_launch: Launch) -> Outcome:
        frozen.advance(1.0)  # each step holds its slot a second: fair share is exact
        return Outcome(exit_code=0)

    store = FakeStore()
    fill(store)
    settings = make_settings(tmp, slots=1, scheduler_window=window)
    with clock.use(frozen):
        sched = Watched(store, settings, {"local": FakeExecutor(auto=one_second)}, lambda _: None)
        sched.admitted = []
        sched.queued = queue = CountingQueue(window)
        runs = the_runs()
        if not submit:
            with store.write() as tx:
                for run in runs:
                    tx.add_run(run)  # queued by a server without a scheduler: nobody's
        sched.start()
        try:
            if submit:

                def hold(draining: bool) -> None:
                    sched.draining = draining
                    sched._plan()

                sched.call(hold, True)
                for run in runs:
                    mine = dataclasses.replace(run, owner_instance=sched.instance_id, fence=1)
                    with store.write() as tx:
                        tx.add_run(mine)
                    sched.notify(mine)
                sched.call(hold, False)

            wait_for(lambda: succeeded(store) == len(runs))
        finally:
            sched.close()
    return sched.admitted, queue.most


def succeeded(store: FakeStore) -> int:
    with store.read() as tx:
        return tx.count_runs_in([RunState.SUCCEEDED]).get(RunState.SUCCEEDED, 0)


def test_a_window_of_five_admits_every_run_in_the_order_of_an_unbounded_one(
    tmp_path: Path,
) -> None:
    unbounded, most_unbounded = admit_all(tmp_path / "all", 10**6, submit=True)
    windowed, most = admit_all(tmp_path / "five", 5, submit=True)
    assert sorted(unbounded) == sorted(r.id for r in the_runs())  # each once
    assert most_unbounded > 5  # (the test queues more than a window)
    assert most <= 5
    assert windowed == unbounded


def test_a_start_with_more_queued_runs_than_the_window_holds_five_and_runs_them_all(
    tmp_path: Path,
) -> None:
    unbounded, _ = admit_all(tmp_path / "all", 10**6, submit=False)
    windowed, most = admit_all(tmp_path / "five", 5, submit=False)
    assert len(windowed) == 60 and most <= 5
    assert windowed == unbounded


def test_a_late_hand_over_of_a_run_read_from_the_store_queues_nothing(tmp_path: Path) -> None:
    """Its commit came before its ``notify``: a refill may have read, started and ended it
    meanwhile; the hand-over must not queue it again."""
    store = FakeStore()
    sched = Scheduler(store, make_settings(tmp_path), {}, lambda _: None)
    early, late = the_runs()[:2]
    sched.store_queue.remember(early.id, 10)
    sched._take(early)  # read from the store (and gone since): no news
    sched._take(late)
    assert set(sched.queued) == {late.id}
