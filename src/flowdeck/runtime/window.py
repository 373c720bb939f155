"""The queued runs this instance may take that wait in the store, beyond the window of
each owner's runs the scheduler holds (:class:`~flowdeck.runtime.run_queue.RunQueue`).

Which runs: those queued through this instance (it owns them from their submission),
those of instances whose lease ended (found by the take-over at start and at each
heartbeat), and — once the start found any — those no instance owns.  This is the rule
``_take_over`` applies, kept between heartbeats so that a refill is one query per owner;
runs another live instance owns are never read (it may start them without a claim).

A run that left the queue (admitted, stopped, killed) still reads as queued until the
commit that says so is in: it is not held again meanwhile (:func:`gone`).  And a run read
from the store may be read there before the hand-over of its submission (``notify``, just
after its commit) reaches the scheduler: the runs held from the store are remembered (the
last ones, a bounded number) so that such a late hand-over does not queue a run again
that has started or even ended meanwhile."""

from __future__ import annotations

import functools
from collections import Counter
from typing import TYPE_CHECKING

from flowdeck.domain.runs import Run, RunState
from flowdeck.store.base import Tx

if TYPE_CHECKING:
    from flowdeck.runtime.core import SchedulerCore


class StoreQueue:
    """This instance's share of the queued runs in the store."""

    def __init__(self) -> None:
        self.instances: set[str] = set()  # ended instances whose queued runs it takes
        self.unowned = False  # it takes queued runs no instance owns (as at its start)
        self._seen: set[tuple[str, str | None]] = set()  # (user, instance) at last look
        self.committing: Counter[str] = Counter()  # left the queue, in a commit under way
        self._read: dict[str, None] = {}  # the last runs held from the store, in order

    def remember(self, run_id: str, keep: int) -> None:
        """``run_id`` was held from the store (of the last ``keep`` such runs, at least)."""
        self._read[run_id] = None
        while len(self._read) > keep:
            del self._read[next(iter(self._read))]

    def was_read(self, run_id: str) -> bool:
        """Was ``run_id`` held from the store lately (its hand-over is no news)?"""
        return run_id in self._read

    def takes(self, me: str, run: Run) -> bool:
        """May this instance (``me``) take the queued ``run``?"""
        inst = run.owner_instance
        return inst == me or inst in self.instances or (inst is None and self.unowned)

    def owners_of(self, me: str) -> list[str]:
        return [me, *sorted(self.instances)]


def gone(core: SchedulerCore, run_id: str) -> bool:
    """Did ``run_id`` leave the queue with its change not committed yet?"""
    return run_id in core.queued.gone or core.store_queue.committing[run_id] > 0


def committing(core: SchedulerCore) -> Counter[str] | None:
    """The runs that left the queue since the last flush, now handed to a commit (None:
    none); :func:`committed` once it is in."""
    if not core.queued.gone:
        return None
    ids = Counter(core.queued.gone)
    core.queued.gone = set()
    core.store_queue.committing.update(ids)
    return ids


def committed(core: SchedulerCore, ids: Counter[str]) -> None:
    """(The loop.)  The commit of these runs' leaving is in (or failed for good): the store
    says so; owners whose window ran low meanwhile are read again."""
    core.store_queue.committing.subtract(ids)
    core.store_queue.committing = +core.store_queue.committing  # (drops zeros)
    q = core.queued
    for owner in q.more:
        if q.needs_reading(owner):
            q.low.add(owner)
    if q.low:
        core._plan()


def refill(core: SchedulerCore) -> None:
    """Read the next queued runs of each owner whose window ran low (one query each, in
    admission order) and hold those not held, active or gone; an owner of whom the store
    had no more is no longer marked."""
    q, share = core.queued, core.store_queue
    owners = sorted(q.low)
    if not owners:
        return
    window = q.window or 0
    limit = window + len(q.gone) + len(share.committing)  # (these still read as queued)
    instances = share.owners_of(core.instance_id)
    with core.store.read() as tx:
        found = {
            owner: tx.next_queued_runs(
                owner, instances=instances, unowned=share.unowned, limit=limit
            )
            for owner in owners
        }
    q.low.difference_update(owners)
    for owner, runs in found.items():
        if len(runs) < limit:
            q.more.discard(owner)  # (holding marks it again if the window is full)
        for run in runs:
            if run.id in q or run.id in core.active or gone(core, run.id):
                continue
            if not q.hold(run):
                break  # the rest come after it
            share.remember(run.id, max(10_000, 2 * window))


def take_over(core: SchedulerCore, tx: Tx, live: list[str], startup: bool) -> bool:
    """Note whose queued runs of ended instances (at start, also of none) this instance
    may take, and mark the owners with runs newly found; True when there are any."""
    share = core.store_queue
    pairs = tx.queued_owners(exclude_owners=live, unowned=startup)
    share.instances = {inst for _, inst in pairs if inst is not None}
    if startup and any(inst is None for _, inst in pairs):
        share.unowned = True
    new = pairs - share._seen
    share._seen = pairs
    for owner, _ in new:
        core.queued.mark(owner)
    return bool(new)


def find_queued(core: SchedulerCore, run_id: str) -> Run | None:
    """A queued run this instance may take that is not held (in the store), or None."""
    if gone(core, run_id):
        return None
    with core.store.read() as tx:
        run = tx.get_run(run_id)
    if run is None or run.state is not RunState.QUEUED:
        return None
    return run if core.store_queue.takes(core.instance_id, run) else None


def tell_waiting(core: SchedulerCore, owner: str, reason: str | None) -> None:
    """Say why ``owner``'s queued runs in the store wait (those held are told one by one)."""
    if owner not in core.queued.more:
        return
    share = core.store_queue
    op = functools.partial(
        _set_waiting,
        owner,
        reason,
        share.owners_of(core.instance_id),
        share.unowned,
    )
    core._op("", op)  # (of no one run: never fenced off)


def _set_waiting(
    owner: str, reason: str | None, instances: list[str], unowned: bool, tx: Tx
) -> None:
    tx.set_queued_waiting(owner, reason, instances=instances, unowned=unowned)
