"""The scheduler's queued runs: a dict by run id that also keeps each owner's runs in
their own admission order (admin priority, the owner's priority, then age) in a heap per
owner.  Fair share (:mod:`flowdeck.domain.fairshare`) chooses among the owners' next runs;
taking one costs O(log n) plus one look at each owner's head, never a sort of the whole
queue on a tick (thousands of runs queue up under a burst of submissions)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from datetime import datetime

from flowdeck.domain.runs import Run

_Key = tuple[int, int, datetime, str]
_Entry = tuple[_Key, int, Run]


def admission_key(run: Run) -> _Key:
    """The order of one owner's runs: admin priority, their own priority, then age."""
    return (-run.admin_priority, -run.priority, run.queued_at or run.created_at, run.id)


class RunQueue(dict[str, Run]):
    def __init__(self) -> None:
        super().__init__()
        self._heaps: dict[str, list[_Entry]] = {}
        self._seq = itertools.count()
        self._entries = 0  # in all heaps, with those of runs that left the queue

    def __setitem__(self, run_id: str, run: Run) -> None:
        super().__setitem__(run_id, run)
        heap = self._heaps.setdefault(run.owner_id, [])
        heapq.heappush(heap, (admission_key(run), next(self._seq), run))
        self._entries += 1
        if self._entries > 2 * len(self) + 1024:  # drop entries of runs gone meanwhile
            for owner, entries in list(self._heaps.items()):
                kept = [e for e in entries if self.get(e[2].id) is e[2]]
                heapq.heapify(kept)
                if kept:
                    self._heaps[owner] = kept
                else:
                    del self._heaps[owner]
            self._entries = sum(len(h) for h in self._heaps.values())

    def head(self, owner: str) -> Run | None:
        """The next run of ``owner`` (None: none queued)."""
        heap = self._heaps.get(owner)
        while heap:
            run = heap[0][2]
            if self.get(run.id) is run:
                return run
            heapq.heappop(heap)  # it left the queue, or was queued again
            self._entries -= 1
        self._heaps.pop(owner, None)
        return None

    def heads(self) -> Iterator[Run]:
        """The next run of each owner with queued runs."""
        for owner in list(self._heaps):
            run = self.head(owner)
            if run is not None:
                yield run

    def take(self, owner: str) -> Run | None:
        """Remove and return the next run of ``owner``."""
        run = self.head(owner)
        if run is not None:
            heapq.heappop(self._heaps[owner])
            self._entries -= 1
            super().__delitem__(run.id)
        return run

    def of(self, owner: str) -> list[Run]:
        """The queued runs of ``owner`` (in no particular order)."""
        return [e[2] for e in self._heaps.get(owner, ()) if self.get(e[2].id) is e[2]]

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
