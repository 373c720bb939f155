"""A deadline on PostgreSQL work, kept by the client.

A database server that hangs (stopped by a signal, its disk stuck, a network that drops
packets silently) leaves a client's socket open and quiet: the kernel still acknowledges
what is sent, so neither TCP keep-alives nor a server-side ``statement_timeout`` ever fire.
``connect_timeout`` bounds new connections; for connections in use, this watchdog shuts
the socket of any connection checked out of the pool for longer than the deadline, so the
call blocked on it fails at once (and the store answers ``StoreUnavailable``).

A transaction cut during its COMMIT may still have been committed: the scheduler's
committer tells by a mark written in the same transaction (``Tx.mark_commit``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("flowdeck.store")
_INFO = "flowdeck_deadline"  # in a pooled connection's info: (its watchdog, its key)


class Watchdog:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._watched: dict[int, tuple[float, Any]] = {}  # id(pool record) -> (deadline, conn)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, key: int, dbapi_conn: Any) -> None:
        with self._lock:
            self._watched[key] = (time.monotonic() + self.timeout_s, dbapi_conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="flowdeck-db-deadline", daemon=True
                )
                self._thread.start()

    def unwatch(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def _main(self) -> None:
        period = min(0.5, self.timeout_s / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                late = [k for k, (deadline, _) in self._watched.items() if deadline <= now]
                expired = [self._watched.pop(k)[1] for k in late]
            for conn in expired:
                log.warning(
                    "a database call took longer than %.1f s (db_timeout_s): cutting its "
                    "connection",
                    self.timeout_s,
                )
                cut(conn)

    def close(self) -> None:
        self._stop.set()


def cut(dbapi_conn: Any) -> None:
    """Shut a connection's socket (both ways): a call blocked on it returns an error."""
    with contextlib.suppress(Exception):
        fd = dbapi_conn.fileno()
        with socket.socket(fileno=socket.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def install(engine: Engine, timeout_s: float) -> Watchdog:
    """Watch every connection from checkout to checkin; a checked-out connection is pinged
    first (under the watch), as ``pool_pre_ping`` would but bounded."""
    dog = Watchdog(timeout_s)

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        dog.watch(id(record), dbapi_conn)
        record.info[_INFO] = (dog, id(record))
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            dog.unwatch(id(record))
            raise exc.DisconnectionError(f"the connection is dead: {e}") from e

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        dog.unwatch(id(record))

    return dog


def lift(conn: Connection) -> None:
    """No deadline for this connection until its checkin (schema migrations, which may
    rightly take long on large tables)."""
    found = conn.info.get(_INFO)
    if found is not None:
        dog, key = found
        dog.unwatch(key)
