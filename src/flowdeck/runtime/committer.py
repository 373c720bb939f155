"""Group commit: the scheduler hands over each tick's changes and goes on; this thread
commits whatever has gathered in ONE transaction, batches applied in order.

Every change is fenced: a batch says which (instance, fence) it expects each of its runs to
have; the changes of a run whose owner or fence differ in the store (another instance took
it over) are dropped, and the scheduler is told to let go of that run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowdeck.domain.composition import CacheEntry
from flowdeck.domain.runs import StepRecord
from flowdeck.store.base import EventRow, Store, Tx

log = logging.getLogger("flowdeck.committer")
# (run id, change): a function of the transaction, or new values of the run's own row
Op = tuple[str, Callable[[Tx], None] | dict[str, Any]]


@dataclass
class Batch:
    ops: list[Op]
    steps: list[StepRecord]
    events: list[EventRow]
    fences: dict[str, int]  # run id -> the fence its changes expect
    claims: dict[str, int] = field(default_factory=dict)  # run id -> its fence before the claim
    cache: list[CacheEntry] = field(default_factory=list)  # rerun cache entries
    done: concurrent.futures.Future[set[str]] = field(default_factory=concurrent.futures.Future)


class Committer:
    def __init__(
        self, store: Store, instance_id: str, on_fenced: Callable[[set[str]], None]
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.on_fenced = on_fenced
        self._pending: list[Batch] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name="flowdeck-committer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> concurrent.futures.Future[set[str]]:
        """Commit soon; the future gives the runs whose changes were fenced off."""
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
                stale = self._commit(batches)
            except Exception as exc:
                log.exception("could not commit %d scheduler batches", len(batches))
                for b in batches:
                    b.done.set_exception(exc)
            else:
                if stale:
                    log.warning("changes of runs owned elsewhere were dropped: %s", stale)
                    self.on_fenced(stale)
                for b in batches:
                    b.done.set_result(stale)

    def _commit(self, batches: list[Batch]) -> set[str]:
        with self.store.write() as tx:
            expected: dict[str, int] = {}
            claims: dict[str, int] = {}
            for b in batches:
                expected.update(b.fences)
                claims.update(b.claims)
            # Claims first (compare-and-set on the fence), then every change is checked
            # against this instance's ownership.
            stale = tx.claim_runs(self.instance_id, claims)
            found = tx.run_fences(sorted(set(expected) - stale))
            stale |= {
                run_id
                for run_id, fence in expected.items()
                if run_id in found and found[run_id] != (self.instance_id, fence)
            }
            # In batch order, with as few statements as that allows: step records and
            # changes of runs' own rows (merged per run, later values winning) gather until
            # an op function comes (it may delete or read one); events and cache entries
            # (which no op touches) are written once, last.
            steps: list[StepRecord] = []
            runs: dict[str, dict[str, Any]] = {}
            for b in batches:
                for run_id, op in b.ops:
                    if run_id in stale:
                        continue
                    if isinstance(op, dict):
                        runs.setdefault(run_id, {}).update(op)
                        continue
                    tx.save_steps(steps)
                    tx.set_runs(runs)
                    steps, runs = [], {}
                    op(tx)
                steps.extend(s for s in b.steps if s.run_id not in stale)
            tx.save_steps(steps)
            tx.set_runs(runs)
            tx.add_events([e for b in batches for e in b.events if e[1] not in stale])
            tx.save_cache_entries([c for b in batches for c in b.cache if c.run_id not in stale])
        return stale

    def close(self) -> None:
        """Commit what is pending, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(30)
