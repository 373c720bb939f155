"""PostgreSQL notifications between the servers of one database.

Writers announce in their own transaction, so a notification is sent at commit and never
for a rolled-back change:

- ``flowdeck_events``, payload the last event id of the transaction: events were committed
  (the event table stays the truth; the notification is only the wake-up);
- ``flowdeck_changes``, payload what changed (:data:`CHANGES`): caches of other servers
  forget it; or ``port:`` and a JSON message of the port hub (records committed to a
  stream port, or delivered to its step): readers and feeders there wake up.

Each server listens on a connection of its own, in a thread.  After a reconnection it
cannot know what it missed, so it catches up on events by id and forgets every cache.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from flowdeck import clock

log = logging.getLogger("flowdeck.instances")
EVENTS_CHANNEL = "flowdeck_events"
CHANGES_CHANNEL = "flowdeck_changes"
#: what other servers may cache: token checks, resolved workflows, webhook subscriptions
CHANGES = ("accounts", "workflows", "webhooks")
PORT_PREFIX = "port:"


def origin_of(pid: int) -> str:
    """Who announces: one server (its API process's pid on its host)."""
    return f"{socket.gethostname()}/{pid}"


#: this server; its own port announcements come back to it, and are dropped
ORIGIN = origin_of(os.getpid())
RETRY_S = 1.0


def port_message(msg: tuple[Any, ...]) -> str:
    """A port hub message as a ``flowdeck_changes`` payload."""
    return PORT_PREFIX + json.dumps([ORIGIN, *msg], separators=(",", ":"))


def libpq_url(sqlalchemy_url: str) -> str:
    """The connection string psycopg takes, from a SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """LISTENs on both channels in a thread until :meth:`close`."""

    def __init__(
        self,
        url: str,
        on_events: Callable[[int], None],
        on_change: Callable[[str], None],
        on_connected: Callable[[], None],
        on_port: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self.url = libpq_url(url)
        self.on_events = on_events
        self.on_change = on_change
        self.on_connected = on_connected
        self.on_port = on_port
        self.connected = threading.Event()
        self.last_notified_at: float | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._main, name="flowdeck-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        import psycopg

        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.connected.set()
                    self._call(self.on_connected)
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.last_notified_at = clock.monotonic()
                            self._dispatch(note.channel, note.payload)
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("listening for other servers' changes failed (%s): retrying", exc)
            self.connected.clear()
            self._closing.wait(RETRY_S)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL and payload.isdigit():
            self._call(self.on_events, int(payload))
        elif channel == CHANGES_CHANNEL and payload in CHANGES:
            self._call(self.on_change, payload)
        elif channel == CHANGES_CHANNEL and payload.startswith(PORT_PREFIX):
            try:
                msg = json.loads(payload[len(PORT_PREFIX) :])
            except ValueError:
                return
            if isinstance(msg, list) and len(msg) > 1 and msg[0] != ORIGIN:
                self._call(self.on_port, tuple(msg[1:]))

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("handling a notification failed")

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(5)
