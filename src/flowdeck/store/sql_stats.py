"""SQL queries for operators' summaries (metrics, ``flowdeck admin status``): each reads only
active runs through an index, so it stays cheap with millions of finished runs."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.runs import ACTIVE_STATES, RunState, StepState
from flowdeck.store import schema as t

# Runs whose steps may be running (a stopping run's steps are still being signalled).
_STEPPING = [RunState.RUNNING.value, RunState.PAUSED.value, RunState.STOPPING.value]


class SqlStatsMixin:
    conn: Connection

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
