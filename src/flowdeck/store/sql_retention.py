"""The SQL store's side of retention (services/retention.py): what has expired, and its
deletion in bounded batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.runs import TERMINAL_STATES, Run
from flowdeck.domain.webhooks import DeliveryState
from flowdeck.store import schema as t
from flowdeck.store.sql_runs import _run

_ENDED = sorted(s.value for s in TERMINAL_STATES)
_FINISHED = [DeliveryState.SUCCEEDED.value, DeliveryState.FAILED.value]


def _old(kind: str, before: datetime) -> tuple[Any, Any]:
    """The key column of ``kind`` and the condition of its expired rows."""
    if kind == "events":
        e = t.events.c
        stored_run = sa.exists().where(t.runs.c.id == e.subject_id)
        stored_graph = sa.exists().where(t.graphs.c.id == e.subject_id)
        return e.id, sa.and_(
            e.at < before,
            sa.not_(sa.and_(e.subject_kind == "run", stored_run)),
            sa.not_(sa.and_(e.subject_kind == "graph", stored_graph)),
        )
    if kind == "deliveries":
        d = t.webhook_deliveries.c
        return d.id, sa.and_(d.state.in_(_FINISHED), d.finished_at < before)
    if kind == "audit":
        return t.audit_log.c.id, t.audit_log.c.at < before
    raise ValueError(f"no retention of {kind!r}")


class SqlRetentionMixin:
    conn: Connection

    def expired_runs(
        self, before: datetime, *, files_only: bool, limit: int | None = None
    ) -> list[Run]:
        r = t.runs.c
        q = t.runs.select().where(r.finished_at < before, r.state.in_(_ENDED), r.keep == sa.false())
        if files_only:
            q = q.where(r.files_purged_at.is_(None))
        q = q.order_by(r.finished_at, r.id)
        if limit is not None:
            q = q.limit(limit)
        return [_run(row) for row in self.conn.execute(q)]

    def mark_files_purged(self, run_ids: list[str], now: datetime) -> list[str]:
        if not run_ids:
            return []
        r = t.runs.c
        claim = (
            t.runs.update()
            .where(
                r.id.in_(run_ids),
                r.state.in_(_ENDED),
                r.keep == sa.false(),
                r.files_purged_at.is_(None),
            )
            .values(files_purged_at=now)
            .returning(r.id)
        )
        claimed = sorted(str(row[0]) for row in self.conn.execute(claim))
        if claimed:
            self.conn.execute(t.products.delete().where(t.products.c.run_id.in_(claimed)))
            self.conn.execute(t.staged_files.delete().where(t.staged_files.c.run_id.in_(claimed)))
        return claimed

    def delete_runs(self, run_ids: list[str]) -> list[str]:
        if not run_ids:
            return []
        r = t.runs.c
        doomed = sa.select(r.id).where(r.id.in_(run_ids), r.state.in_(_ENDED), r.keep == sa.false())
        run_ids = sorted(str(row[0]) for row in self.conn.execute(doomed))
        if not run_ids:
            return []
        e, c = t.events.c, t.event_counters.c
        self.conn.execute(
            t.events.delete().where(e.subject_kind == "run", e.subject_id.in_(run_ids))
        )
        self.conn.execute(
            t.event_counters.delete().where(c.subject_kind == "run", c.subject_id.in_(run_ids))
        )
        self.conn.execute(t.runs.delete().where(r.id.in_(run_ids)))
        return run_ids

    def old_rows(self, kind: str, before: datetime, *, limit: int | None = None) -> list[Any]:
        key, where = _old(kind, before)
        q = sa.select(key).where(where).order_by(key)
        if limit is not None:
            q = q.limit(limit)
        return [row[0] for row in self.conn.execute(q)]

    def delete_rows(self, kind: str, keys: list[Any]) -> int:
        if not keys:
            return 0
        if kind == "deliveries":
            a = t.webhook_attempts
            self.conn.execute(a.delete().where(a.c.delivery_id.in_(keys)))
        table = {"events": t.events, "deliveries": t.webhook_deliveries, "audit": t.audit_log}
        key = table[kind].c.id
        return int(self.conn.execute(table[kind].delete().where(key.in_(keys))).rowcount)
