"""Committed events of several processes, handed on in id order.

With the scheduler in a process of its own, the API process commits events (a run
created, queued, a record pushed) and learns of the scheduler's commits through a socket,
a little later.  Listeners (the event bus above all: a stream resumes after the last id
it sent) need every event once, in id order.  Ids are given in commit order (SQLite has
one writer; PostgreSQL's event writers take an advisory lock), so once an event is
known, every lower id is committed or never will be: an id still missing after
``wait_s`` is read from the database, and skipped if it is not there (a rolled-back
transaction on PostgreSQL, whose sequences do not give ids back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flowdeck.domain.runs import Event

log = logging.getLogger("flowdeck.events")
Deliver = Callable[[list[Event]], None]
Fetch = Callable[[int, int], list[Event]]  # (first id, end id) -> the stored ones


class EventOrder:
    def __init__(self, deliver: Deliver, fetch: Fetch, last_id: int, wait_s: float = 0.01):
        self._deliver = deliver
        self._fetch = fetch
        self.wait_s = wait_s
        self._next = last_id + 1  # the lowest id not handed on yet
        self._pending: dict[int, Event] = {}
        self._gap_since: float | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._fill, name="flowdeck-event-order", daemon=True)
        self._thread.start()

    def offer(self, events: list[Event]) -> None:
        """Committed events, from any thread, in any order across calls."""
        with self._cond:
            for e in events:
                if e.id >= self._next:
                    self._pending[e.id] = e
            self._release()

    def _release(self) -> None:
        """(Under the lock.)  Hand on what follows the last id without a gap."""
        ready: list[Event] = []
        while self._next in self._pending:
            ready.append(self._pending.pop(self._next))
            self._next += 1
        if ready:
            self._hand_on(ready)
        if not self._pending:
            self._gap_since = None
        elif self._gap_since is None or ready:
            self._gap_since = time.monotonic()
            self._cond.notify()

    def _hand_on(self, events: list[Event]) -> None:
        try:
            self._deliver(events)
        except Exception:
            log.exception("could not hand on %d events", len(events))

    def _fill(self) -> None:
        """(Its own thread.)  Read the ids missing for longer than ``wait_s``."""
        while True:
            with self._cond:
                while not self._closed and self._gap_since is None:
                    self._cond.wait()
                if self._closed:
                    return
                due = (self._gap_since or 0.0) + self.wait_s
                now = time.monotonic()
                if now < due:
                    self._cond.wait(due - now)
                    continue
                first, end = self._next, min(self._pending)
            try:
                found = self._fetch(first, end)
            except Exception:
                log.exception("could not read events %d to %d", first, end - 1)
                time.sleep(self.wait_s)
                continue
            with self._cond:
                for e in found:
                    if self._next <= e.id < end:
                        self._pending.setdefault(e.id, e)
                # what is still missing below ``end`` is not in the database: skip it
                while self._next < end:
                    if self._next in self._pending:
                        self._hand_on([self._pending.pop(self._next)])
                    self._next += 1
                self._gap_since = None
                self._release()

    def reach(self, last_id: int) -> None:
        """Every event up to ``last_id`` is committed (another server said so): read those
        not handed on yet and hand them on (in this thread)."""
        with self._cond:
            first = self._next
        if last_id < first:
            return
        try:
            found = self._fetch(first, last_id + 1)
        except Exception:
            log.exception("could not read events %d to %d", first, last_id)
            return
        if found:
            self.offer(found)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)
