"""SQL queries for the WES API."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.runs import RunState
from flowdeck.store import schema as t


class SqlWesMixin:
    conn: Connection

    def count_runs_by_state(self, viewer_id: str | None) -> dict[RunState, int]:
        r = t.runs.c
        q = sa.select(r.state, sa.func.count()).group_by(r.state)
        if viewer_id is not None:
            q = q.where(r.owner_id == viewer_id)
        return {RunState(state): int(n) for state, n in self.conn.execute(q)}
