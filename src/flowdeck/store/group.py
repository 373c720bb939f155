"""Group commit for small independent writes from many threads (run creation under load).

Each caller hands a function of a :class:`Tx`; the first caller to find no commit in
progress becomes the *leader*: it runs every function queued meanwhile (its own first) in
ONE write transaction, commits, wakes their callers with their results, and hands the lead
to the next queued caller, if any.  Under no concurrency this is one transaction per call,
as before; under load it is one per batch: fewer commits (PostgreSQL flushes its log once),
one lock hand-over instead of many.

A function must only act through the transaction (it may run twice): when a batch fails,
each of its functions is run again in a transaction of its own, so one bad write fails
alone and the others are committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from flowdeck.store.base import Store, Tx

T = TypeVar("T")


class _Item(Generic[T]):
    __slots__ = ("error", "fn", "lead", "ready", "value")

    def __init__(self, fn: Callable[[Tx], T]) -> None:
        self.fn = fn
        self.ready = threading.Event()
        self.lead = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupCommit:
    def __init__(self, store: Store, max_batch: int = 64) -> None:
        self.store = store
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Item[Any]] = []
        self._busy = False

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn(tx)`` in a write transaction shared with concurrent callers; its result
        once committed, or its exception."""
        item: _Item[T] = _Item(fn)
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        if not lead:
            item.ready.wait()
            if not item.lead:
                return item.result()
        with self._lock:  # the leader is at the head of the queue
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.ready.set()
                else:
                    self._busy = False
            for other in batch:
                if other is not item:
                    other.ready.set()
        return item.result()

    def _commit(self, batch: list[_Item[Any]]) -> None:
        try:
            with self.store.write() as tx:
                for it in batch:
                    it.value = it.fn(tx)
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
        for it in batch:  # find the faulty one(s): each alone
            it.value = None
            try:
                with self.store.write() as tx:
                    it.value = it.fn(tx)
            except Exception as exc:
                it.error = exc
