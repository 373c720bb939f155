"""The SQL store's server instances, leases and fences (see flowdeck.domain.leases)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.leases import ServerInstance
from flowdeck.store import schema as t


def _instance(row: Any) -> ServerInstance:
    m = row._mapping
    return ServerInstance(
        id=m["id"],
        host=m["host"],
        pid=m["pid"],
        pid_start=m["pid_start"],
        started_at=m["started_at"],
        heartbeat_at=m["heartbeat_at"],
        stopped_at=m["stopped_at"],
        holdings=m["holdings"] or {},
    )


# Every scheduler commit runs it: built once (an expanding IN), compiled once.
_FENCES = sa.select(t.runs.c.id, t.runs.c.owner_instance, t.runs.c.fence).where(
    t.runs.c.id.in_(sa.bindparam("ids", expanding=True))
)

# Built once with bound parameters: compiled once, not per claim.
_CLAIM = (
    t.runs.update()
    .where(t.runs.c.id == sa.bindparam("r_id"), t.runs.c.fence == sa.bindparam("r_fence"))
    .values(owner_instance=sa.bindparam("v_instance"), fence=t.runs.c.fence + 1)
)

_MARK = (
    t.instances.update()
    .where(t.instances.c.id == sa.bindparam("m_id"))
    .values(commit_seq=sa.bindparam("m_seq"))
)


class SqlLeasesMixin:
    conn: Connection

    def add_instance(self, instance: ServerInstance) -> None:
        self.conn.execute(
            t.instances.insert().values(
                id=instance.id,
                host=instance.host,
                pid=instance.pid,
                pid_start=instance.pid_start,
                started_at=instance.started_at,
                heartbeat_at=instance.heartbeat_at,
                stopped_at=instance.stopped_at,
            )
        )

    def heartbeat(
        self,
        instance_id: str,
        now: datetime,
        holdings: dict[str, list[float]] | None = None,
    ) -> bool:
        values: dict[str, Any] = {"heartbeat_at": now}
        if holdings is not None:
            values["holdings"] = holdings
        q = (
            t.instances.update()
            .where(t.instances.c.id == instance_id, t.instances.c.stopped_at.is_(None))
            .values(**values)
        )
        return self.conn.execute(q).rowcount > 0

    def stop_instance(self, instance_id: str, now: datetime) -> None:
        q = t.instances.update().where(t.instances.c.id == instance_id).values(stopped_at=now)
        self.conn.execute(q)

    def mark_commit(self, instance_id: str, seq: int) -> None:
        self.conn.execute(_MARK, {"m_id": instance_id, "m_seq": seq})

    def commit_mark(self, instance_id: str) -> int:
        q = sa.select(t.instances.c.commit_seq).where(t.instances.c.id == instance_id)
        return int(self.conn.execute(q).scalar() or 0)

    def list_instances(self) -> list[ServerInstance]:
        q = t.instances.select().order_by(t.instances.c.started_at)
        return [_instance(r) for r in self.conn.execute(q)]

    def claim_run(self, run_id: str, instance_id: str, fence: int) -> int | None:
        params = {"r_id": run_id, "r_fence": fence, "v_instance": instance_id}
        if self.conn.execute(_CLAIM, params).rowcount == 0:
            return None
        return fence + 1

    def claim_runs(self, instance_id: str, fences: dict[str, int]) -> set[str]:
        if not fences:
            return set()
        rows = [
            {"r_id": run_id, "r_fence": fence, "v_instance": instance_id}
            for run_id, fence in fences.items()
        ]
        result = self.conn.execute(_CLAIM, rows)
        if self.conn.dialect.supports_sane_multi_rowcount and result.rowcount == len(rows):
            return set()  # every claim held (the usual case): one statement
        # Some did not (or the driver cannot tell): which ones?  The claims that held moved
        # their run's fence on by one.
        found = self.run_fences(list(fences))
        return {
            run_id
            for run_id, fence in fences.items()
            if found.get(run_id) != (instance_id, fence + 1)
        }

    def run_fences(self, run_ids: list[str]) -> dict[str, tuple[str | None, int]]:
        if not run_ids:
            return {}
        rows = self.conn.execute(_FENCES, {"ids": run_ids})
        return {row[0]: (row[1], row[2]) for row in rows}
