"""Stream ports of runs: push records into stream inputs, close them, read stream outputs
(at once, or waiting for the next record).

Records are committed, with their offsets, before a push returns; the run's feeder then
delivers them to the step.  Records stored but not yet delivered are bounded by the
``stream_buffer_records`` setting: past it a push is refused (429) and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.ports import (
    INPUT,
    OUTPUT,
    Direction,
    StreamPort,
    StreamRecord,
    stream_inputs,
    stream_outputs,
)
from flowdeck.domain.privilege import Access, Actor
from flowdeck.domain.runs import Run
from flowdeck.errors import BufferFull, InvalidInput, NotFound, PayloadTooLarge, PortClosed
from flowdeck.runtime.ports import PortHub
from flowdeck.services.runs import Runs
from flowdeck.store.base import Store, Tx

RETRY_AFTER_S = 1
MAX_READ = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    port: str
    records: list[StreamRecord]
    next: int
    closed: bool


class Ports:
    def __init__(self, store: Store, settings: Settings, runs: Runs, hub: PortHub) -> None:
        self.store = store
        self.settings = settings
        self.runs = runs
        self.hub = hub

    def _port(
        self, tx: Tx, actor: Actor, run_id: str, direction: Direction, name: str, access: Access
    ) -> Run:
        """The run, once ``name`` is known as one of its stream ports (404 otherwise)."""
        run = self.runs._load(tx, actor, run_id, access)
        if tx.get_port(run.id, direction, name) is None:
            spec = self.runs._spec(tx, run)
            names = stream_inputs(spec) if direction == INPUT else list(stream_outputs(spec))
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise NotFound(f"run {run.id} has no stream {direction} {name!r}{hint}", port=name)
        return run

    # -- inputs ---------------------------------------------------------------------------
    def push(self, actor: Actor, run_id: str, name: str, records: list[Any]) -> StreamPort:
        """Store records at the end of a stream input; the port with its new length."""
        limit = self.settings.stream_buffer_records
        if not records:
            raise InvalidInput("no records: send a non-empty JSON array or NDJSON lines")
        if len(records) > limit:
            raise PayloadTooLarge(
                f"{len(records)} records in one push; at most {limit} (stream_buffer_records)",
                limit_records=limit,
            )
        with self.store.write() as tx:
            run = self._port(tx, actor, run_id, INPUT, name, Access.WRITE)
            port = tx.lock_port(run.id, INPUT, name)
            if port.closed or not run.active:
                why = "it was closed" if port.closed else f"the run is {run.state.value}"
                raise PortClosed(
                    f"input {name!r} of run {run.id} takes no more records: {why}", port=name
                )
            pending = port.length - self.hub.delivered(run.id, name)
            if pending + len(records) > limit:
                raise BufferFull(
                    RETRY_AFTER_S,
                    f"input {name!r} holds {pending} records not yet read by its step; "
                    f"{len(records)} more would pass the limit of {limit}: retry later",
                )
            port = tx.append_records(port, records, clock.now())
        self.hub.changed((port.run_id, INPUT, name))
        return port

    def close(self, actor: Actor, run_id: str, name: str) -> StreamPort:
        """End a stream input: its step sees EOF after the last record."""
        with self.store.write() as tx:
            run = self._port(tx, actor, run_id, INPUT, name, Access.WRITE)
            before = tx.lock_port(run.id, INPUT, name)
            now = clock.now()
            port = tx.close_port(run.id, INPUT, name, now)
            if not before.closed:
                data = {"direction": INPUT, "port": name, "records": port.length}
                tx.add_event("run", run.id, "input.closed", now, actor.username, data)
        self.hub.changed((port.run_id, INPUT, name))
        return port

    # -- outputs --------------------------------------------------------------------------
    def read(self, actor: Actor, run_id: str, name: str, start: int, limit: int) -> Page:
        """Records of a stream output from offset ``start``; ``closed`` once the step that
        writes it ended (or the run did)."""
        limit = max(1, min(limit, MAX_READ))
        with self.store.read() as tx:
            run = self._port(tx, actor, run_id, OUTPUT, name, Access.READ)
            port = tx.get_port(run.id, OUTPUT, name)
            records = tx.read_records(run.id, OUTPUT, name, start, limit)
        closed = (port is not None and port.closed) or not run.active
        nxt = records[-1].offset + 1 if records else start
        return Page(name, records, nxt, closed)

    async def wait(
        self, actor: Actor, run_id: str, name: str, start: int, limit: int, wait_s: float
    ) -> Page:
        """:meth:`read`, waiting up to ``wait_s`` seconds for a record when there is none
        yet (woken by the notifier, not by polling)."""
        deadline = time.monotonic() + wait_s
        key = (run_id, OUTPUT, name)
        while True:
            future = self.hub.waiter(key)
            try:
                page = await run_in_threadpool(self.read, actor, run_id, name, start, limit)
                remaining = deadline - time.monotonic()
                if page.records or page.closed or remaining <= 0:
                    return page
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, remaining)
            finally:
                self.hub.discard(key, future)

    def check_readable(self, actor: Actor, run_id: str, name: str) -> None:
        """404 unless ``name`` is a stream output of a run ``actor`` may read."""
        with self.store.read() as tx:
            self._port(tx, actor, run_id, OUTPUT, name, Access.READ)

    def check_writable(self, actor: Actor, run_id: str, name: str) -> None:
        with self.store.read() as tx:
            self._port(tx, actor, run_id, INPUT, name, Access.WRITE)
