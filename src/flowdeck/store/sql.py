"""The SQL store on SQLAlchemy Core: SQLite (default) and PostgreSQL (psycopg 3).

Third-party errors are translated here, in :meth:`SqlStore._transaction`, and nowhere else.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, Row

from flowdeck.domain.accounts import (
    AccountStatus,
    AuditEntry,
    Role,
    Throttle,
    Token,
    TokenKind,
    User,
)
from flowdeck.domain.workflows import WORKFLOW_KIND, Visibility, Workflow
from flowdeck.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from flowdeck.store import schema as t
from flowdeck.store.base import REFERENCE_GONE, EventHook, Sealer, Store, Tx
from flowdeck.store.deadline import install
from flowdeck.store.pg_listen import CHANGES_CHANNEL, EVENTS_CHANNEL
from flowdeck.store.sql_graphs import SqlGraphsMixin
from flowdeck.store.sql_leases import SqlLeasesMixin
from flowdeck.store.sql_ports import SqlPortsMixin
from flowdeck.store.sql_retention import SqlRetentionMixin
from flowdeck.store.sql_runs import OwnerCache, SqlRunsMixin
from flowdeck.store.sql_secrets import SqlSecretsMixin
from flowdeck.store.sql_stats import SqlStatsMixin
from flowdeck.store.sql_webhooks import SqlWebhooksMixin
from flowdeck.store.sql_wes import SqlWesMixin

_WRITE = "flowdeck_write"


def make_engine(url: str, *, sqlite_synchronous: str = "NORMAL", timeout_s: float = 30) -> Engine:
    """An engine with flowdeck's connection settings for the URL's backend; PostgreSQL's
    connections and transactions are bounded by ``timeout_s`` (see :mod:`deadline`)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=16,
        )
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return sa.create_engine(
        parsed,
        pool_size=10,
        max_overflow=20,
        pool_timeout=timeout_s,
        connect_args={"connect_timeout": max(2, math.ceil(timeout_s))},
    )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        # Straight to the driver: a statement through SQLAlchemy's execution path costs
        # ~60 us more here, and every transaction begins.
        conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if write else "BEGIN"
        )


class WriterLock:
    """SQLite's one writer.  Threads of this process queue on a lock; once other processes
    write too (:meth:`share`), then on an ``flock`` of a file beside the database.  Both
    wake the next writer at once, where SQLite's busy handler sleeps 1 to 100 ms a try."""

    def __init__(self) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None

    def share(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqlStore(Store):
    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", timeout_s: float = 30
    ) -> None:
        super().__init__()
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous, timeout_s=timeout_s)
        self.dialect = self.engine.dialect.name
        self.inline_reads = self.dialect == "sqlite"  # (WAL: readers never wait for writers)
        self._deadline = install(self.engine, timeout_s) if self.dialect != "sqlite" else None
        # SQLite has one writer at a time.  Threads of this process queue on a lock, woken
        # at once, instead of in SQLite's busy handler, which sleeps up to 100 ms a try.
        self._write_lock = WriterLock() if self.dialect == "sqlite" else None
        # PostgreSQL: transactions that add events take an advisory lock (ids are given
        # in commit order) and commit-and-publish under this lock (published in id order).
        self._publish_lock = threading.Lock()
        self._server_lock: int | None = None  # claim_sole_server
        self.owners = OwnerCache()
        # encrypts webhook signing secrets at rest (set by services.context.build_context)
        self.sealer: Sealer | None = None

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Tx]:
        lock = self._write_lock if write else None
        try:
            with lock if lock is not None else nullcontext(), self._connected(write) as tx:
                yield tx
        except StoreUnavailable as e:
            if write:
                self.write_failure = str(e)
            raise
        if write:
            self.write_failure = None

    @contextmanager
    def _connected(self, write: bool) -> Iterator[Tx]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(**{_WRITE: True})
                trans = conn.begin()
                tx = SqlTx(conn, self.dialect, self.event_hooks, self.owners, self.sealer)
                try:
                    yield tx
                except BaseException:
                    trans.rollback()
                    raise
                if not tx.added:
                    trans.commit()
                    return
                if self.dialect == "postgresql":  # other servers read them (store/pg_listen)
                    conn.execute(sa.select(sa.func.pg_notify(EVENTS_CHANNEL, str(tx.added[-1].id))))
                # SQLite: still under the write lock, so events publish in commit order.
                with self._publish_lock if self._write_lock is None else nullcontext():
                    trans.commit()
                    self._publish(tx.added)
        except exc.IntegrityError as e:
            if _foreign_key(e):  # e.g. a workflow version deleted (by another server) meanwhile
                raise NotFound(REFERENCE_GONE, reason=str(e.orig)) from e
            raise AlreadyExists(
                "an object with the same unique name already exists", reason=str(e.orig)
            ) from e
        except (exc.OperationalError, exc.InterfaceError) as e:
            raise StoreUnavailable(f"the database is unavailable: {e.orig}") from e
        except exc.TimeoutError as e:  # every pooled connection stuck in a call
            raise StoreUnavailable(f"the database is unavailable: {e}") from e
        except sqlite3.OperationalError as e:  # BEGIN, sent straight to the driver
            raise StoreUnavailable(f"the database is unavailable: {e}") from e
        except (OverflowError, exc.DataError) as e:
            raise InvalidInput("a value is out of the range the database can store") from e

    def read(self) -> AbstractContextManager[Tx]:
        return self._transaction(write=False)

    def write(self) -> AbstractContextManager[Tx]:
        return self._transaction(write=True)

    def ping(self) -> None:
        from flowdeck.store.migrate import current_revision, head_revision

        with self._transaction(write=False) as tx:
            assert isinstance(tx, SqlTx)
            current = current_revision(tx.conn)
        if current != head_revision():
            raise StoreUnavailable(
                f"database schema is at {current}, not {head_revision()}: run 'flowdeck db upgrade'"
            )

    def share_writes(self, lock_file: Path) -> None:
        if self._write_lock is not None:
            self._write_lock.share(lock_file)

    def announce(self, change: str) -> None:
        if self.dialect == "postgresql":
            with self._transaction(write=False) as tx:
                tx.announce(change)

    def claim_sole_server(self) -> None:
        """SQLite serves one server: a second one on the same database file refuses to
        start (an ``flock`` beside the file, held while this process lives)."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            return
        path = Path(f"{database}.server.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"another flowdeck server (pid {holder}) is using the SQLite database "
                f"{database}: SQLite serves one server; run several servers on PostgreSQL "
                "(docs/operations.md, Running several servers)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._server_lock = fd

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()
        if self._server_lock is not None:
            os.close(self._server_lock)
            self._server_lock = None


def _foreign_key(error: exc.IntegrityError) -> bool:
    """Whether an integrity error is a missing referenced row (not a duplicate)."""
    code = getattr(error.orig, "sqlstate", None)  # psycopg
    return code == "23503" or "FOREIGN KEY constraint failed" in str(error.orig)


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        status=AccountStatus(row.status),
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _token(row: Row[Any]) -> Token:
    return Token(
        id=row.id,
        user_id=row.user_id,
        kind=TokenKind(row.kind),
        name=row.name,
        token_hash=row.token_hash,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _throttle(row: Row[Any]) -> Throttle:
    return Throttle(
        key=row.key,
        failures=row.failures,
        window_started_at=row.window_started_at,
        locked_until=row.locked_until,
    )


def _workflow(row: Any) -> Workflow:
    m = row._mapping
    return Workflow(
        id=m["id"],
        owner_id=m["owner_id"],
        owner_name=m["owner_name"],
        name=m["name"],
        version=m["version"],
        description=m["description"],
        content_hash=m["content_hash"],
        spec=m["spec"],
        source=m["source"],
        has_archive=m["has_archive"],
        visibility=Visibility(m["visibility"]),
        trusted=m["trusted"],
        created_at=m["created_at"],
        archive_bytes=int(m["archive_bytes"] or 0),
    )


_WORKFLOWS = sa.select(*t.workflows.c, t.users.c.username.label("owner_name")).select_from(
    t.workflows.join(t.users)
)

_TOKEN_COLS = [c.label(f"t_{c.name}") for c in t.tokens.c]
# Built once: every authenticated request runs it.
_FIND_TOKEN = (
    sa.select(*_TOKEN_COLS, *t.users.c)
    .select_from(t.tokens.join(t.users))
    .where(t.tokens.c.token_hash == sa.bindparam("token_hash"))
)


class SqlTx(
    SqlRunsMixin,
    SqlWebhooksMixin,
    SqlSecretsMixin,
    SqlLeasesMixin,
    SqlPortsMixin,
    SqlGraphsMixin,
    SqlWesMixin,
    SqlStatsMixin,
    SqlRetentionMixin,
    Tx,
):
    def __init__(
        self,
        conn: Connection,
        dialect: str,
        event_hooks: list[EventHook] | None = None,
        owners: OwnerCache | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.sealer = sealer
        self.conn = conn
        self.dialect = dialect
        self.added = []
        self.event_hooks = event_hooks if event_hooks is not None else []
        self.owners = owners if owners is not None else OwnerCache()

    def announce(self, change: str) -> None:
        if self.dialect == "postgresql":
            self.conn.execute(
                sa.select(sa.func.pg_notify(CHANGES_CHANNEL, change))  # sent at commit
            )

    # -- users ----------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        self.conn.execute(
            t.users.insert().values(
                id=user.id,
                username=user.username,
                username_key=user.username.lower(),
                role=user.role.value,
                status=user.status.value,
                password_hash=user.password_hash,
                created_at=user.created_at,
                updated_at=user.updated_at,
            )
        )

    def get_user(self, user_id: str) -> User | None:
        row = self.conn.execute(t.users.select().where(t.users.c.id == user_id)).first()
        return _user(row) if row else None

    def get_user_by_name(self, username: str) -> User | None:
        q = t.users.select().where(t.users.c.username_key == username.lower())
        row = self.conn.execute(q).first()
        return _user(row) if row else None

    def list_users(self) -> list[User]:
        q = t.users.select().order_by(t.users.c.username_key)
        return [_user(r) for r in self.conn.execute(q)]

    def count_admins(self) -> int:
        q = sa.select(sa.func.count()).where(
            t.users.c.role == Role.ADMIN.value, t.users.c.status == AccountStatus.ACTIVE.value
        )
        return int(self.conn.execute(q).scalar_one())

    def update_user(
        self,
        user_id: str,
        now: datetime,
        *,
        role: Role | None = None,
        status: AccountStatus | None = None,
        password_hash: str | None = None,
    ) -> User | None:
        values: dict[str, Any] = {"updated_at": now}
        if role is not None:
            values["role"] = role.value
        if status is not None:
            values["status"] = status.value
        if password_hash is not None:
            values["password_hash"] = password_hash
        self.conn.execute(t.users.update().where(t.users.c.id == user_id).values(**values))
        return self.get_user(user_id)

    def delete_user(self, user_id: str) -> bool:
        result = self.conn.execute(t.users.delete().where(t.users.c.id == user_id))
        return result.rowcount > 0

    # -- tokens ---------------------------------------------------------------------------
    def add_token(self, token: Token) -> None:
        self.conn.execute(
            t.tokens.insert().values(
                id=token.id,
                user_id=token.user_id,
                kind=token.kind.value,
                name=token.name,
                token_hash=token.token_hash,
                prefix=token.prefix,
                created_at=token.created_at,
                expires_at=token.expires_at,
                revoked_at=token.revoked_at,
                last_used_at=token.last_used_at,
            )
        )

    def find_token(self, token_hash: str) -> tuple[Token, User] | None:
        row = self.conn.execute(_FIND_TOKEN, {"token_hash": token_hash}).first()
        if row is None:
            return None
        m = row._mapping
        token = Token(
            id=m["t_id"],
            user_id=m["t_user_id"],
            kind=TokenKind(m["t_kind"]),
            name=m["t_name"],
            token_hash=m["t_token_hash"],
            prefix=m["t_prefix"],
            created_at=m["t_created_at"],
            expires_at=m["t_expires_at"],
            revoked_at=m["t_revoked_at"],
            last_used_at=m["t_last_used_at"],
        )
        return token, _user(row)

    def list_tokens(self, user_id: str) -> list[Token]:
        q = (
            t.tokens.select()
            .where(t.tokens.c.user_id == user_id)
            .order_by(t.tokens.c.created_at.desc(), t.tokens.c.id.desc())
        )
        return [_token(r) for r in self.conn.execute(q)]

    def get_token(self, token_id: str) -> Token | None:
        row = self.conn.execute(t.tokens.select().where(t.tokens.c.id == token_id)).first()
        return _token(row) if row else None

    def revoke_token(self, token_id: str, now: datetime) -> bool:
        q = (
            t.tokens.update()
            .where(t.tokens.c.id == token_id, t.tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return self.conn.execute(q).rowcount > 0

    def revoke_user_tokens(
        self, user_id: str, now: datetime, *, keep_token_id: str | None = None
    ) -> int:
        q = t.tokens.update().where(t.tokens.c.user_id == user_id, t.tokens.c.revoked_at.is_(None))
        if keep_token_id is not None:
            q = q.where(t.tokens.c.id != keep_token_id)
        return int(self.conn.execute(q.values(revoked_at=now)).rowcount)

    def touch_token(self, token_id: str, now: datetime) -> None:
        self.conn.execute(
            t.tokens.update().where(t.tokens.c.id == token_id).values(last_used_at=now)
        )

    # -- login throttling -----------------------------------------------------------------
    def get_throttles(self, keys: list[str]) -> list[Throttle]:
        q = t.login_throttle.select().where(t.login_throttle.c.key.in_(keys))
        return [_throttle(r) for r in self.conn.execute(q)]

    def update_throttle(
        self, key: str, change: Callable[[Throttle | None], Throttle | None]
    ) -> Throttle | None:
        q = t.login_throttle.select().where(t.login_throttle.c.key == key)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        current = _throttle(row) if row else None
        new = change(current)
        if new is None:
            if current is not None:
                self.conn.execute(t.login_throttle.delete().where(t.login_throttle.c.key == key))
            return None
        values = {
            "failures": new.failures,
            "window_started_at": new.window_started_at,
            "locked_until": new.locked_until,
        }
        if current is None:
            self.conn.execute(t.login_throttle.insert().values(key=key, **values))
        else:
            self.conn.execute(
                t.login_throttle.update().where(t.login_throttle.c.key == key).values(**values)
            )
        return new

    # -- sharing --------------------------------------------------------------------------
    def share(self, kind: str, object_id: str, user_id: str) -> None:
        if user_id not in self.shared_with(kind, object_id):
            self.conn.execute(
                t.shares.insert().values(object_kind=kind, object_id=object_id, user_id=user_id)
            )

    def unshare(self, kind: str, object_id: str, user_id: str) -> bool:
        q = t.shares.delete().where(
            t.shares.c.object_kind == kind,
            t.shares.c.object_id == object_id,
            t.shares.c.user_id == user_id,
        )
        return self.conn.execute(q).rowcount > 0

    def shared_with(self, kind: str, object_id: str) -> set[str]:
        q = sa.select(t.shares.c.user_id).where(
            t.shares.c.object_kind == kind, t.shares.c.object_id == object_id
        )
        return set(self.conn.execute(q).scalars())

    # -- audit log ------------------------------------------------------------------------
    def add_audit(
        self,
        at: datetime,
        action: str,
        *,
        actor_id: str | None,
        actor_name: str | None,
        target: str | None = None,
        address: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        result = self.conn.execute(
            t.audit_log.insert().values(
                at=at,
                action=action,
                actor_id=actor_id,
                actor_name=actor_name,
                target=target,
                address=address,
                details=details or {},
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def list_audit(
        self, *, limit: int = 100, before_id: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        q = t.audit_log.select().order_by(t.audit_log.c.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(t.audit_log.c.id < before_id)
        if action is not None:
            q = q.where(t.audit_log.c.action == action)
        return [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor_id=r.actor_id,
                actor_name=r.actor_name,
                action=r.action,
                target=r.target,
                address=r.address,
                details=r.details,
            )
            for r in self.conn.execute(q)
        ]

    # -- workflows ------------------------------------------------------------------------
    def add_workflow(self, workflow: Workflow) -> None:
        self.conn.execute(
            t.workflows.insert().values(
                id=workflow.id,
                owner_id=workflow.owner_id,
                name=workflow.name,
                version=workflow.version,
                description=workflow.description,
                content_hash=workflow.content_hash,
                spec=workflow.spec,
                source=workflow.source,
                has_archive=workflow.has_archive,
                archive_bytes=workflow.archive_bytes,
                visibility=workflow.visibility.value,
                trusted=workflow.trusted,
                created_at=workflow.created_at,
            )
        )

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        row = self.conn.execute(_WORKFLOWS.where(t.workflows.c.id == workflow_id)).first()
        return _workflow(row) if row else None

    def find_workflow(self, owner_id: str, name: str, version: str | None) -> Workflow | None:
        q = _WORKFLOWS.where(t.workflows.c.owner_id == owner_id, t.workflows.c.name == name)
        if version is not None:
            q = q.where(t.workflows.c.version == version)
        row = self.conn.execute(q.order_by(t.workflows.c.id.desc()).limit(1)).first()
        return _workflow(row) if row else None

    def list_workflows(
        self,
        viewer_id: str | None,
        *,
        name: str | None = None,
        owner_id: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[Workflow]:
        w = t.workflows.c
        q = _WORKFLOWS
        if viewer_id is not None:
            shared = sa.select(t.shares.c.object_id).where(
                t.shares.c.object_kind == WORKFLOW_KIND, t.shares.c.user_id == viewer_id
            )
            q = q.where(
                sa.or_(
                    w.owner_id == viewer_id,
                    w.visibility == Visibility.PUBLIC.value,
                    sa.and_(w.visibility == Visibility.SHARED.value, w.id.in_(shared)),
                )
            )
        if name is not None:
            q = q.where(w.name == name)
        if owner_id is not None:
            q = q.where(w.owner_id == owner_id)
        if before_id is not None:
            q = q.where(w.id < before_id)
        return [_workflow(r) for r in self.conn.execute(q.order_by(w.id.desc()).limit(limit))]

    def update_workflow(
        self,
        workflow_id: str,
        *,
        visibility: Visibility | None = None,
        trusted: bool | None = None,
        archive_bytes: int | None = None,
    ) -> Workflow | None:
        values: dict[str, Any] = {}
        if visibility is not None:
            values["visibility"] = visibility.value
        if trusted is not None:
            values["trusted"] = trusted
        if archive_bytes is not None:
            values["archive_bytes"] = archive_bytes
        if values:
            self.conn.execute(
                t.workflows.update().where(t.workflows.c.id == workflow_id).values(**values)
            )
        return self.get_workflow(workflow_id)

    def delete_workflow(self, workflow_id: str) -> bool:
        self.conn.execute(
            t.shares.delete().where(
                t.shares.c.object_kind == WORKFLOW_KIND, t.shares.c.object_id == workflow_id
            )
        )
        return (
            self.conn.execute(t.workflows.delete().where(t.workflows.c.id == workflow_id)).rowcount
            > 0
        )
