"""The event bus: committed events, in id order, to subscribers in asyncio loops.

The store calls :meth:`EventBus.publish` after each commit (see
``Store.add_commit_listener``), from whatever thread committed.  Each subscriber has a
bounded buffer in its own loop: one that cannot keep up is cut off (it resumes from the
database with the id of the last event it received), it never slows the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

from flowdeck.domain.runs import Event
from flowdeck.errors import FlowdeckError


class SlowSubscriber(FlowdeckError):
    """The client read too slowly: reconnect with Last-Event-ID to resume."""

    code = "slow_subscriber"


class BusClosed(FlowdeckError):
    """The server is shutting down."""

    code = "shutting_down"


class Subscription:
    """One subscriber's buffer; lives in the loop that created it."""

    def __init__(self, accept: Callable[[Event], bool], maxsize: int) -> None:
        self.accept = accept
        self.maxsize = maxsize
        self.loop = asyncio.get_running_loop()
        self._buffer: deque[Event] = deque()
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, events: list[Event]) -> None:
        """In the subscriber's loop: keep the events it accepts."""
        if self.overflowed:
            return
        for e in events:
            if self.accept(e):
                if len(self._buffer) >= self.maxsize:
                    self.overflowed = True
                    self._buffer.clear()
                    break
                self._buffer.append(e)
        if self._buffer or self.overflowed:
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next_batch(self) -> list[Event]:
        """The events buffered so far, waiting for at least one."""
        while not self._buffer:
            if self.overflowed:
                raise SlowSubscriber()
            if self.closed:
                raise BusClosed()
            self._wake.clear()
            await self._wake.wait()
        if self.overflowed:
            raise SlowSubscriber()
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


class EventBus(ABC):
    @abstractmethod
    def publish(self, events: list[Event]) -> None:
        """Hand committed events (in id order) to every subscriber; never blocks."""

    @abstractmethod
    def subscribe(self, accept: Callable[[Event], bool], maxsize: int) -> Subscription:
        """A new subscription in the running loop, receiving what ``accept`` keeps."""

    @abstractmethod
    def unsubscribe(self, sub: Subscription) -> None: ...

    @property
    @abstractmethod
    def subscribers(self) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """End every subscription."""


class LocalEventBus(EventBus):
    """The bus of one server process: publishers in any thread, subscribers in any loop."""

    def __init__(self) -> None:
        self._subs: dict[asyncio.AbstractEventLoop, set[Subscription]] = {}
        self._lock = threading.Lock()

    def publish(self, events: list[Event]) -> None:
        with self._lock:
            loops = list(self._subs)
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._deliver, loop, events)
            except RuntimeError:  # the loop is closed: its subscribers are gone
                with self._lock:
                    self._subs.pop(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop, events: list[Event]) -> None:
        with self._lock:
            subs = list(self._subs.get(loop, ()))
        for sub in subs:
            sub.offer(events)

    def subscribe(self, accept: Callable[[Event], bool], maxsize: int) -> Subscription:
        sub = Subscription(accept, maxsize)
        with self._lock:
            self._subs.setdefault(sub.loop, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.loop)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.loop]

    @property
    def subscribers(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def close(self) -> None:
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # its loop is closed
                sub.loop.call_soon_threadsafe(sub.close)
