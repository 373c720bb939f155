"""The scheduler's queued runs: a dict by run id that also keeps them in admission order
(priority, then age) in a heap, so that taking the next few costs O(k log n), not a sort of
the whole queue on every tick (thousands of runs queue up under a burst of submissions)."""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime

from flowdeck.domain.runs import Run

_Key = tuple[int, datetime, str]


def admission_key(run: Run) -> _Key:
    return (-run.priority, run.queued_at or run.created_at, run.id)


class RunQueue(dict[str, Run]):
    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[_Key, int, Run]] = []
        self._seq = itertools.count()

    def __setitem__(self, run_id: str, run: Run) -> None:
        super().__setitem__(run_id, run)
        heapq.heappush(self._heap, (admission_key(run), next(self._seq), run))
        if len(self._heap) > 2 * len(self) + 1024:  # drop entries of runs gone meanwhile
            self._heap = [e for e in self._heap if self.get(e[2].id) is e[2]]
            heapq.heapify(self._heap)

    def take_first(self, n: int) -> list[Run]:
        """Remove and return the ``n`` first runs in admission order."""
        taken: list[Run] = []
        while self._heap and len(taken) < n:
            _key, _seq, run = heapq.heappop(self._heap)
            if self.get(run.id) is run:  # else it left the queue, or was queued again
                super().__delitem__(run.id)
                taken.append(run)
        return taken
