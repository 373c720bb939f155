"""Persistence: a :class:`Store` boundary, its SQL implementation and an in-memory fake."""

from __future__ import annotations

from flowdeck.store.base import Store, Tx

__all__ = ["Store", "Tx", "open_store"]


def open_store(url: str, *, sqlite_synchronous: str = "NORMAL", timeout_s: float = 30) -> Store:
    """Open the SQL store at ``url`` (``memory://`` gives the in-memory fake);
    ``timeout_s`` bounds a PostgreSQL connection attempt and transaction."""
    if url == "memory://":
        from flowdeck.store.fake import FakeStore

        return FakeStore()
    from flowdeck.store.sql import SqlStore

    return SqlStore(url, sqlite_synchronous=sqlite_synchronous, timeout_s=timeout_s)
