"""Group commit: the scheduler hands over each tick's changes and goes on; this thread
commits whatever has gathered in ONE transaction, batches applied in order."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flowdeck.domain.runs import StepRecord
from flowdeck.store.base import EventRow, Store, Tx

log = logging.getLogger("flowdeck.committer")


@dataclass
class Batch:
    ops: list[Callable[[Tx], None]]
    steps: list[StepRecord]
    events: list[EventRow]
    done: concurrent.futures.Future[None]


class Committer:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[Batch] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name="flowdeck-committer", daemon=True)
        self._thread.start()

    def submit(
        self, ops: list[Callable[[Tx], None]], steps: list[StepRecord], events: list[EventRow]
    ) -> concurrent.futures.Future[None]:
        batch = Batch(ops, steps, events, concurrent.futures.Future())
        with self._cond:
            self._pending.append(batch)
            self._cond.notify()
        return batch.done

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                batches, self._pending = self._pending, []
            try:
                with self.store.write() as tx:
                    for b in batches:
                        for op in b.ops:
                            op(tx)
                        tx.save_steps(b.steps)
                        tx.add_events(b.events)
            except Exception as exc:
                log.exception("could not commit %d scheduler batches", len(batches))
                for b in batches:
                    b.done.set_exception(exc)
            else:
                for b in batches:
                    b.done.set_result(None)

    def close(self) -> None:
        """Commit what is pending, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(30)
