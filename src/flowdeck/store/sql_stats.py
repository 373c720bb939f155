"""SQL queries for operators' summaries (metrics, ``flowdeck admin status``): each reads only
active runs through an index, so it stays cheap with millions of finished runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from flowdeck.domain.fairshare import decay
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import ACTIVE_STATES, RunState, StepState
from flowdeck.store import schema as t

# Runs whose steps may be running (a stopping run's steps are still being signalled).
_STEPPING = [RunState.RUNNING.value, RunState.PAUSED.value, RunState.STOPPING.value]


class SqlStatsMixin:
    conn: Connection
    dialect: str

    def count_runs_in(self, states: list[RunState]) -> dict[RunState, int]:
        r = t.runs.c
        q = (
            sa.select(r.state, sa.func.count())
            .where(r.state.in_([s.value for s in states]))
            .group_by(r.state)
        )
        return {RunState(state): int(n) for state, n in self.conn.execute(q)}

    def count_running_steps(self) -> int:
        r, s = t.runs.c, t.steps.c
        q = (
            sa.select(sa.func.count())
            .select_from(t.steps.join(t.runs, r.id == s.run_id))
            .where(r.state.in_(_STEPPING), s.state == StepState.RUNNING.value)
        )
        return int(self.conn.execute(q).scalar_one())

    def load_by_instance(self) -> dict[str | None, tuple[int, int]]:
        r, s = t.runs.c, t.steps.c
        active = [x.value for x in ACTIVE_STATES]
        runs = sa.select(r.owner_instance, sa.func.count()).where(r.state.in_(active))
        steps = (
            sa.select(r.owner_instance, sa.func.count())
            .select_from(t.steps.join(t.runs, r.id == s.run_id))
            .where(r.state.in_(_STEPPING), s.state == StepState.RUNNING.value)
        )
        found: dict[str | None, tuple[int, int]] = {}
        for owner, n in self.conn.execute(runs.group_by(r.owner_instance)):
            found[owner] = (int(n), 0)
        for owner, n in self.conn.execute(steps.group_by(r.owner_instance)):
            found[owner] = (found.get(owner, (0, 0))[0], int(n))
        return found

    def oldest_queued_at(self) -> datetime | None:
        r = t.runs.c
        q = sa.select(sa.func.min(r.queued_at)).where(r.state == RunState.QUEUED.value)
        value: datetime | None = self.conn.execute(q).scalar_one()  # typed as the column
        return value

    # -- quotas and usage -------------------------------------------------------------------
    def get_quota(self, user_id: str) -> Quota | None:
        q = t.user_quotas.select().where(t.user_quotas.c.user_id == user_id)
        row = self.conn.execute(q).first()
        return _quota(row) if row is not None else None

    def set_quota(self, user_id: str, quota: Quota, now: datetime) -> None:
        self.conn.execute(t.user_quotas.delete().where(t.user_quotas.c.user_id == user_id))
        if not quota.empty:
            self.conn.execute(
                t.user_quotas.insert().values(user_id=user_id, updated_at=now, **quota.as_dict())
            )

    def list_quotas(self) -> dict[str, Quota]:
        rows = self.conn.execute(t.user_quotas.select())
        return {row.user_id: _quota(row) for row in rows}

    def add_usage(self, amounts: dict[str, float], now: datetime, half_life_s: float) -> None:
        u = t.user_usage
        users = sa.select(t.users.c.id).where(t.users.c.id.in_(sorted(amounts)))
        known = [row.id for row in self.conn.execute(users)]
        if not known:
            return
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(u)
        fresh = [{"user_id": k, "slot_seconds": 0.0, "as_of": now} for k in known]
        self.conn.execute(insert.values(fresh).on_conflict_do_nothing())
        q = u.select().where(u.c.user_id.in_(known))
        if self.dialect == "postgresql":
            q = q.with_for_update()  # another server may add at the same time
        for row in self.conn.execute(q).all():
            age = (now - row.as_of).total_seconds()
            value = decay(row.slot_seconds, age, half_life_s) + amounts[row.user_id]
            change = u.update().where(u.c.user_id == row.user_id)
            self.conn.execute(change.values(slot_seconds=value, as_of=max(now, row.as_of)))

    def list_usage(self) -> dict[str, tuple[float, datetime]]:
        rows = self.conn.execute(t.user_usage.select())
        return {row.user_id: (row.slot_seconds, row.as_of) for row in rows}

    def stored_bytes_by_owner(self, owner_id: str | None = None) -> dict[str, int]:
        r = t.runs.c
        found: dict[str, int] = {}
        for table in (t.products, t.staged_files):
            q = (
                sa.select(r.owner_id, sa.func.sum(table.c.size))
                .select_from(table.join(t.runs, r.id == table.c.run_id))
                .group_by(r.owner_id)
            )
            if owner_id is not None:
                q = q.where(r.owner_id == owner_id)
            if table is t.staged_files:  # files under the data root are read in place
                q = q.where(table.c.source != "data_root")
            for owner, size in self.conn.execute(q):
                if size:
                    found[owner] = found.get(owner, 0) + int(size)
        w = t.workflows.c
        q = sa.select(w.owner_id, sa.func.sum(w.archive_bytes)).group_by(w.owner_id)
        if owner_id is not None:
            q = q.where(w.owner_id == owner_id)
        for owner, size in self.conn.execute(q):
            if size:
                found[owner] = found.get(owner, 0) + int(size)
        return found


def _quota(row: Any) -> Quota:
    return Quota(
        max_active_runs=row.max_active_runs,
        max_cpus=row.max_cpus,
        max_stored_bytes=row.max_stored_bytes,
    )
