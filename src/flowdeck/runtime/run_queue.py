"""The scheduler's queued runs: a dict by run id that also keeps each owner's runs in
their admission order (admin priority, the owner's priority, then age).  Fair share
(:mod:`flowdeck.domain.fairshare`) chooses among the owners' next runs; taking one costs a
look at each owner's head, never a sort of the whole queue on a tick.

It holds a bounded **window**: at most ``window`` runs of each owner, their first ones in
admission order.  Fair share only ever looks at each owner's next run, so holding each
owner's best runs admits in exactly the order holding all of them would.  A run that
arrives for an owner whose window is full is held only if it comes before the worst held
run (which is then dropped from memory); either way the owner is marked as having more
runs in the store (:attr:`RunQueue.more`), and once fewer than half a window of theirs is
held the scheduler reads their next runs from the store again (:attr:`RunQueue.low`,
``runtime/window.py``).  Memory is O(owners x window), whatever the queue's depth."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flowdeck.domain.runs import Run

_Key = tuple[int, int, datetime, str]  # (its last field is the run's id)


def admission_key(run: Run) -> _Key:
    """The order of one owner's runs: admin priority, their own priority, then age."""
    return (-run.admin_priority, -run.priority, run.queued_at or run.created_at, run.id)


class RunQueue(dict[str, Run]):
    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        self.window = window  # runs held per owner, at most (None: all of them)
        self._order: dict[str, list[_Key]] = {}  # each owner's held runs, sorted
        self.more: set[str] = set()  # owners with queued runs in the store not held here
        self.low: set[str] = set()  # of those, owners under half a window: to read again
        # runs that left the queue (taken, stopped, killed), their change not yet handed
        # to a commit: the store still says queued (see the scheduler's _flush)
        self.gone: set[str] = set()

    # -- holding -----------------------------------------------------------------------
    def hold(self, run: Run) -> bool:
        """Hold ``run`` (again: its old entry goes); False when its owner's window is full
        of runs that come before it: it is left to the store."""
        if dict.__contains__(self, run.id):
            self._remove(run.id, again=True)
        self.gone.discard(run.id)
        owner = run.owner_id
        order = self._order.setdefault(owner, [])
        key = admission_key(run)
        if self.window is not None and len(order) >= self.window:
            self.more.add(owner)
            if key > order[-1]:
                return False
            super().__delitem__(order.pop()[3])  # the worst held run waits in the store
        bisect.insort(order, key)
        super().__setitem__(run.id, run)
        return True

    def __setitem__(self, run_id: str, run: Run) -> None:
        assert run_id == run.id
        self.hold(run)

    def mark(self, owner: str) -> None:
        """``owner`` has runs in the store that may not be held: read them."""
        self.more.add(owner)
        self.low.add(owner)

    def needs_reading(self, owner: str) -> bool:
        """Has ``owner`` runs in the store, and fewer than half a window held?"""
        held = len(self._order.get(owner, ()))
        return owner in self.more and (self.window is None or 2 * held < self.window)

    # -- leaving -----------------------------------------------------------------------
    def _remove(self, run_id: str, again: bool = False) -> Run:
        """Forget ``run_id`` (``again``: it is held again at once)."""
        run = super().pop(run_id)
        owner = run.owner_id
        order = self._order[owner]
        key = admission_key(run)
        del order[bisect.bisect_left(order, key)]
        if not order:
            del self._order[owner]
        if not again and self.needs_reading(owner):
            self.low.add(owner)
        return run

    def __delitem__(self, run_id: str) -> None:
        self._remove(run_id)
        self.gone.add(run_id)

    def pop(self, run_id: str, *default: Any) -> Any:
        if not dict.__contains__(self, run_id):
            if default:
                return default[0]
            raise KeyError(run_id)
        run = self._remove(run_id)
        self.gone.add(run_id)
        return run

    def head(self, owner: str) -> Run | None:
        """The next run of ``owner`` (None: none held)."""
        order = self._order.get(owner)
        return self[order[0][3]] if order else None

    def heads(self) -> Iterator[Run]:
        """The next run of each owner with queued runs held."""
        for order in list(self._order.values()):
            if order:
                yield self[order[0][3]]

    def take(self, owner: str) -> Run | None:
        """Remove and return the next run of ``owner``."""
        run = self.head(owner)
        if run is not None:
            del self[run.id]
        return run

    def of(self, owner: str) -> list[Run]:
        """The held runs of ``owner``, in admission order."""
        return [self[key[3]] for key in self._order.get(owner, ())]

    def take_first(self, n: int) -> list[Run]:
        """Remove and return the ``n`` first runs by admission order alone, whoever their
        owners (no fair share)."""
        taken: list[Run] = []
        while len(taken) < n:
            heads = list(self.heads())
            if not heads:
                break
            first = min(heads, key=admission_key)
            self.take(first.owner_id)
            taken.append(first)
        return taken
