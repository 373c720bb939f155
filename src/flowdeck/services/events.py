"""Events: listed from the store, or streamed live — history first, then what the bus
carries, without a gap or a duplicate.

Who sees what: a run's own events URL follows the run's privilege rule (owner, users it is
shared with, admins); the global URL carries the events of the caller's own runs, and of
every run for admins.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread

from flowdeck.config import Settings
from flowdeck.domain.events import check_patterns, matcher
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Event
from flowdeck.events.bus import EventBus
from flowdeck.services.runs import Runs
from flowdeck.services.subflows import family
from flowdeck.store.base import Store, Tx

PAGE = 500


class Events:
    def __init__(self, store: Store, settings: Settings, runs: Runs, bus: EventBus) -> None:
        self.store = store
        self.settings = settings
        self.runs = runs
        self.bus = bus
        # subject kind -> (tx, actor, id) loader that raises NotFound for the unseen
        self.loaders: dict[str, Callable[[Tx, Actor, str], Any]] = {"run": runs.load}

    def find(
        self,
        actor: Actor,
        *,
        run_id: str | None = None,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        limit: int = 100,
        kind: str = "run",
    ) -> list[Event]:
        """Oldest first; ``run_id`` is the run URL's run (or graph's, with ``kind``),
        ``runs`` a filter of the global list."""
        types = check_patterns(types or [])
        with self.store.read() as tx:
            if run_id is not None:
                self.loaders[kind](tx, actor, run_id)
                return tx.list_events(
                    subject_kind=kind,
                    subject_id=run_id if kind != "run" else None,
                    subject_ids=family(tx, run_id) if kind == "run" else None,
                    after_id=after,
                    limit=limit,
                    types=types,
                )
            return tx.list_events(
                owner_id=None if actor.is_admin else actor.user_id,
                subject_ids=runs or None,
                types=types,
                after_id=after,
                limit=limit,
            )

    def _family(self, run_id: str) -> list[str]:
        with self.store.read() as tx:
            return family(tx, run_id)

    def head(self) -> int:
        with self.store.read() as tx:
            return tx.last_event_id()

    def _accept(
        self,
        actor: Actor,
        run_id: str | None,
        runs: list[str] | None,
        types: list[str],
        kind: str = "run",
        family: list[str] | None = None,
    ) -> Callable[[Event], bool]:
        type_ok = matcher(types)
        if run_id is not None:
            members = {run_id, *(family or [])}  # a run's URL: with its sub-workflows'

            def accept(e: Event) -> bool:
                if e.subject_kind != kind or e.subject_id not in members:
                    return False
                if e.type == "subflow.started":
                    members.add(str(e.data.get("run_id")))
                return type_ok(e.type)

            return accept
        wanted = set(runs) if runs else None
        owner = None if actor.is_admin else actor.user_id
        return lambda e: (
            (owner is None or e.owner_id == owner)
            and (wanted is None or e.subject_id in wanted)
            and type_ok(e.type)
        )

    async def prepare_stream(
        self,
        actor: Actor,
        *,
        run_id: str | None = None,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        kind: str = "run",
    ) -> AsyncIterator[Event]:
        """Check the request (errors raise here, before any byte is sent) and return the
        stream: the stored events after ``after`` (a run's URL: from its first event; the
        global URL: from now), then live ones."""
        types = check_patterns(types or [])
        members: list[str] | None = None
        if run_id is not None and kind == "run":
            members = await anyio.to_thread.run_sync(self._family, run_id)
        # Subscribe first: whatever commits from now on is buffered, and the history read
        # below covers everything before.  Duplicates are dropped by id.
        sub = self.bus.subscribe(
            self._accept(actor, run_id, runs, types, kind, members),
            self.settings.sse_buffer_events,
        )
        try:
            if run_id is not None:
                await anyio.to_thread.run_sync(
                    functools.partial(self.find, actor, run_id=run_id, limit=1, kind=kind)
                )
            start = after if after is not None else 0 if run_id is not None else None
            if start is None:
                start = await anyio.to_thread.run_sync(self.head)
        except BaseException:
            self.bus.unsubscribe(sub)
            raise

        async def stream() -> AsyncIterator[Event]:
            last = start
            try:
                while True:
                    page = await anyio.to_thread.run_sync(
                        functools.partial(
                            self.find,
                            actor,
                            run_id=run_id,
                            runs=runs,
                            types=types,
                            after=last,
                            limit=PAGE,
                            kind=kind,
                        )
                    )
                    for e in page:
                        yield e
                        last = e.id
                    if len(page) < PAGE:
                        break
                while True:
                    for e in await sub.next_batch():
                        if e.id > last:
                            yield e
                            last = e.id
            finally:
                self.bus.unsubscribe(sub)

        return stream()
