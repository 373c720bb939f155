# Generated from client/_async/resource.py by scripts/gen_sync_client.py: do not edit.
"""What runs and graphs share: a status refreshed by each call, an event stream, ``wait``
that follows it, and the controls."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any, ClassVar

from flowdeck.client._backend import Progress, SyncBackend, SyncStream
from flowdeck.client._shared import (
    API,
    WAIT_STREAM_FAILURES,
    Event,
    Reconnect,
    ends,
    event_query,
    retryable,
)
from flowdeck.client._sync.http import SyncHTTP
from flowdeck.client.errors import ApiError


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class SyncResource:
    """A run or a graph.  ``data`` is the last status the server sent; every call that
    answers with a status (and :meth:`status`) refreshes it."""

    KIND: ClassVar[str]
    TERMINAL: ClassVar[frozenset[str]]
    WAIT_TYPES: ClassVar[list[str] | None] = None  # the events that wake wait()

    def __init__(self, client: SyncHTTP, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}>"

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def done(self) -> bool:
        """It has ended: nothing will change any more."""
        return self.state in self.TERMINAL

    @property
    def url(self) -> str:
        return f"{API}/{self.KIND}s/{self.id}"

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        return self.client.request(method, self.url + path, **kwargs)

    def _update(self, method: str, path: str = "", **kwargs: Any) -> dict[str, Any]:
        self.data = self._call(method, path, **kwargs)
        return self.data

    def _ends(self, event: Event) -> bool:
        return ends(event, self.KIND, self.TERMINAL)

    # -- following ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The current status (kept in ``data``)."""
        return self._update("GET")

    def list_events(
        self, types: list[str] | None = None, after: int | None = None, limit: int | None = 100
    ) -> list[Event]:
        """Its events so far, oldest first: those matching ``types`` (patterns such as
        ``step.*``), after event id ``after``, at most ``limit`` (``None``: all), page
        after page."""
        query = event_query(None, types, None)
        pages = self.client.event_pages(self.url + "/events", query, after, limit)
        with closing(pages) as events:
            return [event for event in events]

    def events(
        self,
        types: list[str] | None = None,
        after: int | None = None,
        *,
        until_done: bool = True,
        reconnect: Reconnect | None = None,
        timeout: float | None = None,
    ) -> SyncStream[Event]:
        """Its events from the first (or after event id ``after``), live, reconnecting
        with ``Last-Event-ID`` (no event lost or repeated); with ``until_done`` it ends
        after the final event.  ``TimeoutError`` after ``timeout`` seconds."""
        query = event_query(None, types, None)
        stream = self.client.follow(
            self.url + "/events", query, after, reconnect, deadline_of(timeout)
        )
        with closing(stream) as sses:
            for sse in sses:
                if not sse.data:
                    continue
                event = Event.parse(sse.data)
                yield event
                if until_done and self._ends(event):
                    return

    def wait(
        self, progress: Progress | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Until it ends; its final status.  It follows the event stream (calling
        ``progress`` with the fresh status after each change) and polls only if
        streaming fails.  ``TimeoutError`` after ``timeout`` seconds."""
        deadline = deadline_of(timeout)
        status = self.status()
        SyncBackend.report(progress, status)
        if self.done:
            return status
        try:
            remaining = None if deadline is None else deadline - time.monotonic()
            events = self.events(
                self.WAIT_TYPES,
                timeout=remaining,
                reconnect=Reconnect(max_failures=WAIT_STREAM_FAILURES),
            )
            with closing(events) as followed:
                for event in followed:
                    status = self.status()
                    SyncBackend.report(progress, status)
                    if self._ends(event) or self.done:
                        return status
        except ApiError as exc:
            if not retryable(exc):
                raise
        return self._poll(progress, deadline)

    def _poll(self, progress: Progress | None, deadline: float | None) -> dict[str, Any]:
        delay = 0.2
        while True:
            status = self.status()
            SyncBackend.report(progress, status)
            if self.done:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.KIND} {self.id} is still {self.state}")
            SyncBackend.sleep(delay)
            delay = min(2.0, delay * 1.5)

    # -- control --------------------------------------------------------------------------
    def resume(self) -> dict[str, Any]:
        return self._update("POST", "/resume")

    def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        """Stop gracefully: running steps are asked to end and get ``grace_s`` seconds
        (the server's setting if not given) before they are killed."""
        body = {"grace_s": grace_s} if grace_s is not None else {}
        return self._update("POST", "/stop", json=body)

    def kill(self) -> dict[str, Any]:
        """Kill at once: no grace for running steps."""
        return self._update("POST", "/kill")

    def delete(self) -> None:
        """Delete it and its files."""
        self._call("DELETE")
