"""Group commit for small independent writes from many callers (run creation under load).

Callers hand a function of a :class:`Tx` to one writer thread, which runs every function
queued meanwhile in ONE write transaction, commits, and resolves each caller's future with
its result.  Under no concurrency this is one transaction per call; under load it is one per
batch: fewer commits (PostgreSQL flushes its log once), and no caller's thread is held while
the write lock is taken.  Threads call :meth:`GroupCommit.write`; the event loop awaits
``asyncio.wrap_future(group.submit(fn))`` and so needs no worker thread at all.

A function must only act through the transaction (it may run twice): when a batch fails,
each of its functions is run again in a transaction of its own, so one bad write fails
alone and the others are committed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from flowdeck.store.base import Store, Tx

T = TypeVar("T")
_Item = tuple[Callable[[Tx], Any], "Future[Any]"]


class GroupCommit:
    def __init__(self, store: Store, max_batch: int = 64) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        """Queue ``fn(tx)``; its future resolves once the transaction that ran it committed
        (or with its exception)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the group commit is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="flowdeck-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put((fn, future))
        return future

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn(tx)`` in a write transaction shared with concurrent callers; its result
        once committed, or its exception."""
        return self.submit(fn).result()

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
                values = [fn(tx) for fn, _future in batch]
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
        else:
            for (_fn, future), value in zip(batch, values, strict=True):
                future.set_result(value)
            return
        for fn, future in batch:  # find the faulty one(s): each alone
            try:
                with self.store.write() as tx:
                    value = fn(tx)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)
