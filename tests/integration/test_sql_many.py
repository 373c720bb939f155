"""Rows written through ``execute_many`` reach the driver exactly as SQLAlchemy Core would
send them (same SQL, same converted values), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from flowdeck.domain.runs import Run, RunState, StepRecord, StepState
from flowdeck.store.sql import SqlStore
from flowdeck.store.sql_graphs import _cache_upsert
from flowdeck.store.sql_many import execute_many
from flowdeck.store.sql_runs import (
    _EVENT_INSERT_IDS,
    _RUN_INSERT,
    _run_update,
    _run_values,
    _step_row,
    _step_upsert,
)
from tests.helpers import clean_sql_store
from tests.integration.test_store_contract import user, workflow

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _runs() -> list[dict[str, Any]]:
    run = Run("run_m", "u_alice", "wf_1", "alice/wf@1", RunState.QUEUED, T0, T0, tags=["x"])
    return [{"id": run.id, "owner_id": run.owner_id, **_run_values(run)}]


def _steps() -> list[dict[str, Any]]:
    return [
        _step_row(
            StepRecord(
                "run_m",
                "s",
                i,
                StepState.SUCCEEDED,
                T0 + timedelta(seconds=i),
                1,
                item={"n": i},
                exit_code=0,
                started_at=T0,
                ended_at=T0,
                cpu_time_s=0.5,
                outputs={"out": [1, "two"]},
            )
        )
        for i in range(3)
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def sent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, list[Any]]]:
    store = clean_sql_store(request, tmp_path)
    seen: list[Any] = []

    def plain(value: Any) -> Any:  # psycopg's Json wrapper has no equality of its own
        return ("json", value.obj) if type(value).__name__ == "Json" else value

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        params = params if many else [params]
        rows = [p.values() if isinstance(p, dict) else p for p in params]
        keys = [list(p) if isinstance(p, dict) else None for p in params]
        seen.append((statement, keys, [tuple(plain(v) for v in row) for row in rows]))

    event.listen(store.engine, "before_cursor_execute", record)
    yield store, seen
    event.remove(store.engine, "before_cursor_execute", record)
    store.close()


def test_rows_reach_the_driver_as_core_sends_them(
    sent: tuple[SqlStore, list[Any]],
) -> None:
    sql, seen = sent
    with sql.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
    d = sql.dialect
    cases = [
        (_RUN_INSERT, _runs()),
        (_step_upsert(d), _steps()),
        (
            _run_update(("state", "state_since")),
            [{"r_id": "run_m", "v_state": "running", "v_state_since": T0}],
        ),
        (
            _cache_upsert(d),
            [
                {
                    "run_id": "run_m",
                    "step": "s",
                    "idx": 0,
                    "key": "k",
                    "owner_id": "u_alice",
                    "workflow_id": "wf_1",
                    "created_at": T0,
                    "outputs": {"a": 1},
                }
            ],
        ),
        (
            _EVENT_INSERT_IDS,
            [
                {
                    "id": 7,
                    "subject_kind": "run",
                    "subject_id": "run_m",
                    "seq": 1,
                    "type": "run.staged",
                    "at": T0,
                    "actor": None,
                    "data": {"k": [1]},
                    "owner_id": "u_alice",
                }
            ],
        ),
    ]
    for stmt, rows in cases:
        for how in ("core", "many"):
            with pytest.raises(RuntimeError), sql.write() as tx:  # rolled back
                conn = tx.conn  # type: ignore[attr-defined]
                if stmt is not _RUN_INSERT:
                    execute_many(conn, _RUN_INSERT, _runs())
                seen.clear()
                if how == "core":
                    conn.execute(stmt, rows)
                    core = list(seen)
                else:
                    execute_many(conn, stmt, rows)
                    assert seen == core, stmt
                raise RuntimeError("roll back")
    assert core  # the comparison ran
