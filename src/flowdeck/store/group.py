"""Group commit for small independent writes from many callers (run creation under load).

Callers hand an item to one writer thread, which writes every item queued meanwhile in ONE
write transaction, commits, and resolves each caller's future with its result.  By default
an item is a function of a :class:`Tx`, called in turn; an ``apply`` function given at
construction writes a whole batch of plain items at once instead (one multi-row statement
per table, not one per item).  Under no concurrency this is one transaction per call; under
load it is one per batch: fewer commits (PostgreSQL flushes its log once), and no caller's
thread is held while the write lock is taken.  Threads call :meth:`GroupCommit.write`; the
event loop awaits ``asyncio.wrap_future(group.submit(item))`` and so needs no worker thread.

A write must only act through the transaction (it may run twice): when a batch fails, each
of its items is written again in a transaction of its own, so one bad write fails alone and
the others are committed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from flowdeck.store.base import Store, Tx

I = TypeVar("I")  # noqa: E741 - an item
_Item = tuple[Any, "Future[Any]"]
Apply = Callable[[Tx, list[I]], list[Any]]


def call_each(tx: Tx, fns: list[Callable[[Tx], Any]]) -> list[Any]:
    """The default write: each item is a function of the transaction."""
    return [fn(tx) for fn in fns]


class GroupCommit(Generic[I]):
    def __init__(self, store: Store, apply: Apply[I] | None = None, max_batch: int = 64) -> None:
        """``apply(tx, items)`` writes a batch and returns each item's result, in order."""
        self.store = store
        self.apply: Apply[Any] = apply or call_each
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, item: I) -> Future[Any]:
        """Queue ``item`` (``fn(tx)`` by default); its future resolves once the transaction
        that wrote it committed (or with its exception)."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the group commit is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="flowdeck-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put((item, future))
        return future

    def write(self, item: I) -> Any:
        """Write ``item`` in a transaction shared with concurrent callers; its result once
        committed, or its exception."""
        return self.submit(item).result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()

    def _main(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                self._commit([item for item in batch if item[1].set_running_or_notify_cancel()])
            except BaseException as exc:  # never leave a caller waiting
                for _fn, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        if not batch:
            return
        try:
            with self.store.write() as tx:
                values = self.apply(tx, [item for item, _future in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
        else:
            for (_fn, future), value in zip(batch, values, strict=True):
                future.set_result(value)
            return
        for item, future in batch:  # find the faulty one(s): each alone
            try:
                with self.store.write() as tx:
                    (value,) = self.apply(tx, [item])
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)
