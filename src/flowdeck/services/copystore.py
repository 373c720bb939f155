"""``flowdeck admin copy-store``: a stopped SQLite store copied into an empty PostgreSQL
database, row for row: ids, events, users and their password hashes, tokens, secrets (as
they are encrypted: the key file stays where it is).  The data directory's files are not
moved: the server is then started on the same data directory with the new database_url.

All of it happens in one PostgreSQL transaction (schema and rows): a copy that fails
leaves the database empty, to be tried again."""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from flowdeck.config import Settings
from flowdeck.errors import Conflict, InvalidInput
from flowdeck.services.backup import sqlite_path
from flowdeck.store.migrate import alembic_config, current_revision, head_revision, upgrade
from flowdeck.store.schema import metadata
from flowdeck.store.sql import make_engine

CHUNK = 1000


@dataclasses.dataclass
class CopyReport:
    rows: dict[str, int]
    upgraded_from: str | None  # the source's schema, when it had to be upgraded first

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@contextmanager
def _stopped(db_file: Path) -> Iterator[None]:
    """Hold the server lock of a SQLite database (no server may start meanwhile); a
    Conflict if a server holds it."""
    path = Path(f"{db_file}.server.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise Conflict(
                f"a flowdeck server (pid {holder}) is using {db_file}: stop it first "
                "(copy-store copies a stopped store)"
            ) from None
        yield
    finally:
        os.close(fd)


def copy_store(settings: Settings, to_url: str) -> CopyReport:
    db_file = sqlite_path(settings.resolved_database_url)
    if db_file is None:
        raise InvalidInput("copy-store copies a SQLite store: database_url is not SQLite")
    if not db_file.is_file():
        raise InvalidInput(f"no SQLite database at {db_file}")
    try:
        target_url = sa.make_url(to_url)
    except sa.exc.ArgumentError:
        raise InvalidInput(f"--to: not a database URL: {to_url!r}") from None
    if target_url.get_backend_name() != "postgresql":
        raise InvalidInput("--to: a PostgreSQL URL (postgresql+psycopg://user@host/db)")
    with _stopped(db_file):
        source = make_engine(settings.resolved_database_url)
        target = sa.create_engine(target_url)
        try:
            with source.connect() as conn:
                before = current_revision(conn)
            upgraded = None
            if before != head_revision():
                upgrade(source)
                upgraded = before or "empty"
            with target.begin() as out:
                names = sa.inspect(out).get_table_names()
                if names:
                    raise Conflict(
                        f"the database {target_url.render_as_string()} is not empty "
                        f"({len(names)} tables): copy into an empty database"
                    )
                command.upgrade(alembic_config(out), "head")
                with source.connect() as src:
                    rows = {t.name: _copy_table(src, out, t) for t in metadata.sorted_tables}
                _reset_sequences(out)
        finally:
            source.dispose()
            target.dispose()
    return CopyReport(rows, upgraded)


def _copy_table(src: Connection, out: Connection, table: sa.Table) -> int:
    count = 0
    result = src.execution_options(yield_per=CHUNK).execute(table.select())
    for chunk in result.partitions(CHUNK):
        rows = [dict(row._mapping) for row in chunk]
        out.execute(table.insert(), rows)
        count += len(rows)
    return count


def _reset_sequences(out: Connection) -> None:
    """Ids copied as they were: each serial column's sequence goes on after the largest."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer) or column.autoincrement is False:
                continue
            seq = out.execute(
                sa.select(sa.func.pg_get_serial_sequence(table.name, column.name))
            ).scalar()
            if seq is None:
                continue
            top = out.execute(sa.select(sa.func.max(column))).scalar()
            out.execute(
                sa.select(sa.func.setval(seq, (top or 0) + 1, False))  # the next id given
            )
