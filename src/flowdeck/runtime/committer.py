"""Group commit: the scheduler hands over each tick's changes and goes on; this thread
commits whatever has gathered in ONE transaction, batches applied in order.

Every change is fenced: a batch says which (instance, fence) it expects each of its runs to
have; the changes of a run whose owner or fence differ in the store (another instance took
it over) are dropped, and the scheduler is told to let go of that run.

A decision is never dropped for want of the database: batches that could not be committed
because the store is unavailable (stopped, hung, its disk full) are held and tried again,
in order and ahead of newer ones, until they commit.  Each commit writes its number on the
instance's row (``Tx.mark_commit``) in the same transaction, so a commit whose outcome a
cut connection hid is looked up, not applied twice.
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
from flowdeck.errors import StoreUnavailable
from flowdeck.store.base import EventRow, Store, Tx

log = logging.getLogger("flowdeck.committer")
# (run id, change): a function of the transaction, or new values of the run's own row
Op = tuple[str, Callable[[Tx], None] | dict[str, Any]]
RETRY_FIRST_S = 0.1  # held batches are tried again after this, doubling up to RETRY_MAX_S
RETRY_MAX_S = 2.0


@dataclass
class Batch:
    ops: list[Op]
    steps: list[StepRecord]
    events: list[EventRow]
    fences: dict[str, int]  # run id -> the fence its changes expect
    claims: dict[str, int] = field(default_factory=dict)  # run id -> its fence before the claim
    cache: list[CacheEntry] = field(default_factory=list)  # rerun cache entries
    done: concurrent.futures.Future[set[str]] = field(default_factory=concurrent.futures.Future)

    def runs(self) -> set[str]:
        """The runs this batch changes or claims."""
        return (
            {r for r, _ in self.ops}
            | {s.run_id for s in self.steps}
            | {e[1] for e in self.events}
            | set(self.fences)
            | set(self.claims)
        )


class Committer:
    def __init__(
        self, store: Store, instance_id: str, on_fenced: Callable[[set[str]], None]
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.on_fenced = on_fenced
        self._pending: list[Batch] = []
        self._held: list[Batch] = []  # kept out by an outage: committed before any other
        # A failed commit that may have gone in: its number and batches.
        self._unsure: tuple[int, list[Batch]] | None = None
        self._seq = 0
        self._warned = False
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name="flowdeck-committer", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> concurrent.futures.Future[set[str]]:
        """Commit soon; the future gives the runs of this batch whose changes were fenced
        off (not those of other batches that went in the same transaction)."""
        with self._cond:
            self._pending.append(batch)
            self._cond.notify()
        return batch.done

    def _main(self) -> None:
        wait = RETRY_FIRST_S
        while True:
            with self._cond:
                if self._held and not self._closing:
                    self._cond.wait_for(lambda: self._closing, timeout=wait)
                while not self._pending and not self._held and not self._closing:
                    self._cond.wait()
                if not self._pending and not self._held and self._closing:
                    return
                giving_up = self._closing and bool(self._held)
                batches, self._held, self._pending = self._held + self._pending, [], []
            if self._commit_held(batches):
                wait = RETRY_FIRST_S
            elif giving_up:
                log.error(
                    "stopping with %d scheduler batches not committed (the database is "
                    "unavailable): the next start recovers from the attempt journals",
                    len(batches),
                )
                for b in batches:
                    b.done.set_exception(StoreUnavailable("the server stopped first"))
                return
            else:
                wait = min(wait * 2, RETRY_MAX_S)

    def _commit_held(self, batches: list[Batch]) -> bool:
        """Commit ``batches`` (held ones first); False when the store is unavailable (they
        are held again)."""
        try:
            if self._unsure is not None:
                seq, tried = self._unsure
                with self.store.read() as tx:
                    went_in = tx.commit_mark(self.instance_id) >= seq
                    stale = self._fenced_off(tx, tried) if went_in else set()
                self._unsure = None
                if went_in:  # the last try is in after all: settle it; commit the rest
                    self._settle(tried, stale)
                    batches = [b for b in batches if not b.done.done()]
            self._try(batches)
        except StoreUnavailable as exc:
            left = [b for b in batches if not b.done.done()]
            if not self._warned:
                log.warning(
                    "cannot commit %d scheduler batches (%s): held, and tried again until "
                    "the database takes them",
                    len(left),
                    exc,
                )
                self._warned = True
            with self._cond:
                self._held = left + self._held
            return False
        if self._warned:
            log.warning("the database takes the scheduler's commits again")
            self._warned = False
        return True

    def _try(self, batches: list[Batch]) -> None:
        """One transaction for all; when it fails for another reason than the store's
        availability, each batch alone, so that a bad one costs only itself."""
        if not batches:
            return
        self._seq += 1
        self._unsure = (self._seq, batches)
        try:
            stale = self._commit(batches, self._seq)
        except StoreUnavailable:
            raise
        except Exception as exc:
            self._unsure = None
            if len(batches) == 1:
                log.exception("could not commit a scheduler batch: its changes are dropped")
                batches[0].done.set_exception(exc)
                return
            for b in batches:
                self._try([b])
            return
        self._unsure = None
        self._settle(batches, stale)

    def _settle(self, batches: list[Batch], stale: set[str]) -> None:
        if stale:
            log.warning("changes of runs owned elsewhere were dropped: %s", stale)
            self.on_fenced(stale)
        for b in batches:
            b.done.set_result(stale & b.runs())

    def _fenced_off(self, tx: Tx, batches: list[Batch]) -> set[str]:
        """The runs of committed ``batches`` that the store says are not ours (as
        :meth:`_commit` would have found)."""
        expected: dict[str, int] = {}
        for b in batches:
            expected.update(b.fences)
        found = tx.run_fences(sorted(expected))
        return {
            run_id
            for run_id, fence in expected.items()
            if run_id in found and found[run_id] != (self.instance_id, fence)
        }

    def _commit(self, batches: list[Batch], seq: int) -> set[str]:
        with self.store.write() as tx:
            tx.mark_commit(self.instance_id, seq)
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
