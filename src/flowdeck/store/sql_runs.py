"""The SQL store's run operations: runs, steps, events, products, staged files."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from flowdeck.domain.runs import (
    ACTIVE_STATES,
    Event,
    Product,
    Run,
    RunState,
    StagedFile,
    StepRecord,
    StepState,
)
from flowdeck.store import schema as t
from flowdeck.store.base import EventRow
from flowdeck.store.sql_many import execute_many

_RUN_FIELDS = (
    "workflow_id",
    "workflow_ref",
    "state",
    "params",
    "resources",
    "priority",
    "created_at",
    "state_since",
    "queued_at",
    "started_at",
    "finished_at",
    "paused_at",
    "paused_s",
    "pause_mode",
    "error",
    "outputs",
    "owner_instance",
    "fence",
    "keep",
    "files_purged_at",
    "admin_priority",
    "waiting",
)


def _run_values(run: Run) -> dict[str, Any]:
    values = {f: getattr(run, f) for f in _RUN_FIELDS}
    values["state"] = run.state.value
    values["tags"] = list(run.tags)
    return values


def _run(row: Any, tags: list[str] | None = None) -> Run:
    m = row._mapping
    return Run(
        id=m["id"],
        owner_id=m["owner_id"],
        workflow_id=m["workflow_id"],
        workflow_ref=m["workflow_ref"],
        state=RunState(m["state"]),
        created_at=m["created_at"],
        state_since=m["state_since"],
        params=m["params"] or {},
        resources=m["resources"] or {},
        tags=list(m["tags"] or []) if tags is None else tags,
        priority=m["priority"],
        queued_at=m["queued_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        paused_at=m["paused_at"],
        paused_s=m["paused_s"] or 0.0,
        pause_mode=m["pause_mode"],
        error=m["error"],
        outputs=m["outputs"] or {},
        owner_instance=m["owner_instance"],
        fence=m["fence"],
        keep=bool(m["keep"]),
        files_purged_at=m["files_purged_at"],
        admin_priority=m["admin_priority"],
        waiting=m["waiting"],
    )


def _step(row: Any) -> StepRecord:
    m = row._mapping
    return StepRecord(
        run_id=m["run_id"],
        name=m["name"],
        index=m["idx"],
        state=StepState(m["state"]),
        state_since=m["state_since"],
        attempts=m["attempts"],
        item=m["item"],
        exit_code=m["exit_code"],
        signal=m["signal"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        max_rss_kb=m["max_rss_kb"],
        cpu_time_s=m["cpu_time_s"],
        outputs=m["outputs"] or {},
        error=m["error"],
        job_id=m["job_id"],
        waiting=m["waiting"],
    )


def _event(row: Any) -> Event:
    m = row._mapping
    return Event(
        m["id"],
        m["subject_kind"],
        m["subject_id"],
        m["seq"],
        m["type"],
        m["at"],
        m["actor"],
        m["data"] or {},
        m["owner_id"],
    )


class OwnerCache:
    """Subject (kind, id) -> owner id.  Owners never change, so a bounded map serves the
    event writers without a query per transaction."""

    LIMIT = 10_000  # ~1.5 MB; runs whose entry was dropped cost one query at their events

    def __init__(self) -> None:
        self._owners: dict[tuple[str, str], str | None] = {}

    def get(self, key: tuple[str, str]) -> str | None:
        return self._owners.get(key)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._owners

    def put(self, key: tuple[str, str], owner: str | None) -> None:
        if len(self._owners) >= self.LIMIT:
            self._owners.clear()
        self._owners[key] = owner


# Tables whose rows are event subjects, by subject kind.
SUBJECT_TABLES: dict[str, sa.Table] = {"run": t.runs, "graph": t.graphs}
_ADVISORY_EVENTS = 0x666C6F77  # "flow": serialises event ids with commit order


def like_pattern(pattern: str) -> str:
    """A ``*`` pattern as an SQL LIKE pattern with ``\\`` as the escape."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


_STEP_COLUMNS = [c.name for c in t.steps.c]


@functools.cache
def _step_upsert(dialect: str) -> Any:
    """One upsert statement for steps, built once and run with many rows."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t.steps)
    stmt = insert.values({c: sa.bindparam(c) for c in _STEP_COLUMNS})
    keys = {"run_id", "name", "idx"}
    return stmt.on_conflict_do_update(
        index_elements=sorted(keys),
        set_={c: stmt.excluded[c] for c in _STEP_COLUMNS if c not in keys},
    )


@functools.lru_cache(maxsize=128)
def _upsert_stmt(dialect: str, table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> Any:
    """An upsert of these columns into a table, built once (compiled once)."""
    target = t.metadata.tables[table]
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(target)
    stmt = insert.values({c: sa.bindparam(c) for c in columns})
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns if c not in keys}
    )


@functools.lru_cache(maxsize=256)
def _run_update(columns: tuple[str, ...]) -> Any:
    """An update of these columns of one run (parameters ``r_id`` and ``v_<column>``)."""
    return (
        t.runs.update()
        .where(t.runs.c.id == sa.bindparam("r_id"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


_BUMP_CHUNK = 32  # subjects per counter statement (one statement cached per size)


@functools.lru_cache(maxsize=_BUMP_CHUNK)
def _counter_bump(n: int) -> Any:
    """Add ``n{j}`` to the counters of subjects (``k{j}``, ``i{j}``), j < n, in one
    statement; returns (kind, id, new last_seq) of each.  Written as text: SQLAlchemy does
    not cache a multi-row VALUES construct, and this SQL is the same on SQLite (>= 3.35) and
    PostgreSQL."""
    rows = ", ".join(f"(:k{j}, :i{j}, :n{j})" for j in range(n))  # placeholders only
    return sa.text(
        "INSERT INTO event_counters (subject_kind, subject_id, last_seq) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT (subject_kind, subject_id) "
        "DO UPDATE SET last_seq = event_counters.last_seq + excluded.last_seq "
        "RETURNING subject_kind, subject_id, last_seq"
    )


_RUN_INSERT = t.runs.insert()
_EVENT_INSERT = t.events.insert().returning(t.events.c.id, sort_by_parameter_order=True)
# SQLite: RETURNING in parameter order makes SQLAlchemy send one INSERT per row.  A write
# transaction there is the only writer (BEGIN IMMEDIATE; a deferred one that read a stale
# snapshot fails to write), so the ids are taken as max(id) + 1, … — the ids SQLite itself
# would give a rowid without AUTOINCREMENT — and the rows go in one executemany.
_EVENT_LAST_ID = sa.select(sa.func.coalesce(sa.func.max(t.events.c.id), 0))
_EVENT_INSERT_IDS = t.events.insert()


def _step_row(step: StepRecord) -> dict[str, Any]:
    return {
        "run_id": step.run_id,
        "name": step.name,
        "idx": step.index,
        "state": step.state.value,
        "state_since": step.state_since,
        "attempts": step.attempts,
        "item": step.item,
        "exit_code": step.exit_code,
        "signal": step.signal,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "max_rss_kb": step.max_rss_kb,
        "cpu_time_s": step.cpu_time_s,
        "outputs": step.outputs,
        "error": step.error,
        "job_id": step.job_id,
        "waiting": step.waiting,
    }


class SqlRunsMixin:
    conn: Connection
    dialect: str
    added: list[Event]
    owners: OwnerCache
    _events_added: Callable[[list[Event]], None]

    def _upsert(self, table: sa.Table, values: dict[str, Any], keys: list[str]) -> None:
        self._upsert_many(table, [values], keys)

    def _upsert_many(self, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
        """Insert or update rows with the same columns: one prebuilt statement, many rows."""
        if rows:
            stmt = _upsert_stmt(self.dialect, table.name, tuple(rows[0]), tuple(keys))
            execute_many(self.conn, stmt, rows)

    # -- runs -----------------------------------------------------------------------------
    def add_run(self, run: Run) -> None:
        self.add_runs([run])

    def add_runs(self, runs: list[Run]) -> None:
        # One prebuilt statement with bound parameters: compiled once, not per run.
        execute_many(
            self.conn,
            _RUN_INSERT,
            [{"id": run.id, "owner_id": run.owner_id, **_run_values(run)} for run in runs],
        )
        for run in runs:
            self.owners.put(("run", run.id), run.owner_id)  # its events need no owner query
        tags = [{"run_id": run.id, "tag": tag} for run in runs for tag in dict.fromkeys(run.tags)]
        if tags:
            self.conn.execute(t.run_tags.insert(), tags)

    def get_run(self, run_id: str) -> Run | None:
        row = self.conn.execute(t.runs.select().where(t.runs.c.id == run_id)).first()
        return _run(row) if row else None

    def update_run(self, run_id: str, **changes: Any) -> Run:
        self.set_run(run_id, **changes)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def set_runs(self, changes: dict[str, dict[str, Any]]) -> None:
        # One executemany per set of columns changed (tags are a table of their own).
        same: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for run_id, change in changes.items():
            if "tags" in change:
                self.set_run(run_id, **change)
                continue
            values = {k: (v.value if isinstance(v, RunState) else v) for k, v in change.items()}
            same.setdefault(tuple(values), []).append(
                {"r_id": run_id, **{f"v_{k}": v for k, v in values.items()}}
            )
        for columns, rows in same.items():
            execute_many(self.conn, _run_update(columns), rows)

    def set_run(self, run_id: str, **changes: Any) -> None:
        values = {k: (v.value if isinstance(v, RunState) else v) for k, v in changes.items()}
        if "tags" in values:
            self.conn.execute(t.run_tags.delete().where(t.run_tags.c.run_id == run_id))
            if values["tags"]:
                self.conn.execute(
                    t.run_tags.insert(),
                    [{"run_id": run_id, "tag": tag} for tag in dict.fromkeys(values["tags"])],
                )
        stmt = _run_update(tuple(values))
        self.conn.execute(stmt, {"r_id": run_id, **{f"v_{k}": v for k, v in values.items()}})

    def delete_run(self, run_id: str) -> bool:
        self.conn.execute(
            t.events.delete().where(
                t.events.c.subject_kind == "run", t.events.c.subject_id == run_id
            )
        )
        self.conn.execute(
            t.event_counters.delete().where(
                t.event_counters.c.subject_kind == "run", t.event_counters.c.subject_id == run_id
            )
        )
        return self.conn.execute(t.runs.delete().where(t.runs.c.id == run_id)).rowcount > 0

    def list_runs(
        self,
        viewer_id: str | None,
        *,
        states: list[RunState] | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        after_id: str | None = None,
        newest_first: bool = True,
        limit: int = 50,
        search: str | None = None,
        order_by: str = "created",
    ) -> list[Run]:
        r = t.runs.c
        q = t.runs.select()
        if viewer_id is not None:
            q = q.where(r.owner_id == viewer_id)
        if owner_id is not None:
            q = q.where(r.owner_id == owner_id)
        if states:
            q = q.where(r.state.in_([s.value for s in states]))
        if workflow is not None:
            pattern = f"%/{workflow}" if "@" in workflow else f"%/{workflow}@%"
            q = q.where(r.workflow_ref.like(pattern))
        if tag is not None:
            q = q.where(r.id.in_(sa.select(t.run_tags.c.run_id).where(t.run_tags.c.tag == tag)))
        if created_after is not None:
            q = q.where(r.created_at >= created_after)
        if created_before is not None:
            q = q.where(r.created_at < created_before)
        if search:
            needle = search.lower()
            tagged = sa.select(t.run_tags.c.run_id).where(
                sa.func.lower(t.run_tags.c.tag).contains(needle, autoescape=True)
            )
            q = q.where(
                sa.or_(
                    sa.func.lower(r.id).contains(needle, autoescape=True),
                    sa.func.lower(r.workflow_ref).contains(needle, autoescape=True),
                    r.id.in_(tagged),
                )
            )
        field = {"workflow": r.workflow_ref, "state": r.state}.get(order_by)
        if after_id is not None:
            if field is None:
                q = q.where(r.id < after_id if newest_first else r.id > after_id)
            else:
                # keyset paging on (field, id); a cursor whose run is gone pages on its id
                there = t.runs.alias("cursor_run")
                name = field.name
                found = sa.select(there.c[name]).where(there.c.id == after_id)
                at = sa.func.coalesce(found.scalar_subquery(), "")
                key, cut = sa.tuple_(field, r.id), sa.tuple_(at, after_id)
                q = q.where(key < cut if newest_first else key > cut)
        keys = [r.id] if field is None else [field, r.id]
        q = q.order_by(*(k.desc() if newest_first else k.asc() for k in keys)).limit(limit)
        return [_run(row) for row in self.conn.execute(q)]

    def queued_runs(self, *, exclude_owners: list[str], unowned: bool) -> list[Run]:
        r = t.runs.c
        owned_elsewhere = sa.and_(
            r.owner_instance.is_not(None), r.owner_instance.not_in(exclude_owners)
        )
        who = sa.or_(r.owner_instance.is_(None), owned_elsewhere) if unowned else owned_elsewhere
        q = t.runs.select().where(r.state == RunState.QUEUED.value, who).order_by(r.id)
        return [_run(row) for row in self.conn.execute(q)]

    def queued_owners(
        self, *, exclude_owners: list[str], unowned: bool
    ) -> set[tuple[str, str | None]]:
        r = t.runs.c
        owned_elsewhere = sa.and_(
            r.owner_instance.is_not(None), r.owner_instance.not_in(exclude_owners)
        )
        who = sa.or_(r.owner_instance.is_(None), owned_elsewhere) if unowned else owned_elsewhere
        q = (
            sa.select(r.owner_id, r.owner_instance)
            .where(r.state == RunState.QUEUED.value, who)
            .distinct()
        )
        return {(owner, inst) for owner, inst in self.conn.execute(q)}

    @staticmethod
    def _takeable(owner_id: str, instances: list[str], unowned: bool) -> Any:
        r = t.runs.c
        who: sa.ColumnElement[bool] = r.owner_instance.in_(instances)
        if unowned:
            who = sa.or_(who, r.owner_instance.is_(None))
        return sa.and_(r.owner_id == owner_id, r.state == RunState.QUEUED.value, who)

    def next_queued_runs(
        self, owner_id: str, *, instances: list[str], unowned: bool, limit: int
    ) -> list[Run]:
        r = t.runs.c
        q = (
            t.runs.select()
            .where(self._takeable(owner_id, instances, unowned))
            .order_by(r.admin_priority.desc(), r.priority.desc(), r.queued_at, r.id)
            .limit(limit)
        )
        return [_run(row) for row in self.conn.execute(q)]

    def set_queued_waiting(
        self, owner_id: str, reason: str | None, *, instances: list[str], unowned: bool
    ) -> None:
        q = t.runs.update().where(self._takeable(owner_id, instances, unowned))
        self.conn.execute(q.values(waiting=reason))

    def count_active_runs(
        self, *, workflow_id: str | None = None, owner_id: str | None = None
    ) -> int:
        q = sa.select(sa.func.count()).where(t.runs.c.state.in_([s.value for s in ACTIVE_STATES]))
        if workflow_id is not None:
            q = q.where(t.runs.c.workflow_id == workflow_id)
        if owner_id is not None:
            q = q.where(t.runs.c.owner_id == owner_id)
        return int(self.conn.execute(q).scalar_one())

    # -- steps ----------------------------------------------------------------------------
    def save_step(self, step: StepRecord) -> None:
        self.save_steps([step])

    def save_steps(self, steps: list[StepRecord]) -> None:
        if steps:
            execute_many(self.conn, _step_upsert(self.dialect), [_step_row(s) for s in steps])

    def list_steps(self, run_id: str) -> list[StepRecord]:
        q = (
            t.steps.select()
            .where(t.steps.c.run_id == run_id)
            .order_by(t.steps.c.name, t.steps.c.idx)
        )
        return [_step(row) for row in self.conn.execute(q)]

    def step_summary(self, run_id: str, limit: int = 100) -> tuple[dict[str, int], list[str]]:
        c = t.steps.c
        counts = {
            state: int(n)
            for state, n in self.conn.execute(
                sa.select(c.state, sa.func.count()).where(c.run_id == run_id).group_by(c.state)
            )
        }
        current = self.conn.execute(
            sa.select(c.name, c.idx)
            .where(c.run_id == run_id, c.state.in_(["running", "paused"]))
            .order_by(c.name, c.idx)
            .limit(limit)
        )
        return counts, [n if i < 0 else f"{n}[{i}]" for n, i in current]

    def step_counts(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        c = t.steps.c
        found: dict[str, dict[str, int]] = {}
        if run_ids:
            q = (
                sa.select(c.run_id, c.state, sa.func.count())
                .where(c.run_id.in_(run_ids))
                .group_by(c.run_id, c.state)
            )
            for run_id, state, n in self.conn.execute(q):
                found.setdefault(run_id, {})[state] = int(n)
        return found

    def delete_step(self, run_id: str, name: str, index: int) -> bool:
        c = t.steps.c
        q = t.steps.delete().where(c.run_id == run_id, c.name == name, c.idx == index)
        return self.conn.execute(q).rowcount > 0

    # -- events ---------------------------------------------------------------------------
    def add_event(
        self,
        subject_kind: str,
        subject_id: str,
        type: str,
        at: datetime,
        actor: str | None,
        data: dict[str, Any],
    ) -> Event:
        return self.add_events([(subject_kind, subject_id, type, at, actor, data)])[0]

    def add_events(self, events: list[EventRow]) -> list[Event]:
        if not events:
            return []
        if self.dialect == "postgresql" and not self.added:
            self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ADVISORY_EVENTS)))
        counts: dict[tuple[str, str], int] = {}
        for kind, sid, *_ in events:
            counts[(kind, sid)] = counts.get((kind, sid), 0) + 1
        owners = self._subject_owners(list(counts))
        next_seq: dict[tuple[str, str], int] = {}
        subjects = list(counts.items())
        for start in range(0, len(subjects), _BUMP_CHUNK):
            chunk = subjects[start : start + _BUMP_CHUNK]
            params: dict[str, Any] = {}
            for j, ((kind, sid), n) in enumerate(chunk):
                params.update({f"k{j}": kind, f"i{j}": sid, f"n{j}": n})
            for kind, sid, last in self.conn.execute(_counter_bump(len(chunk)), params):
                next_seq[(kind, sid)] = int(last) - counts[(kind, sid)] + 1
        rows: list[dict[str, Any]] = []
        for kind, sid, type_, at, actor, data in events:
            seq = next_seq[(kind, sid)]
            next_seq[(kind, sid)] = seq + 1
            rows.append(
                {
                    "subject_kind": kind,
                    "subject_id": sid,
                    "seq": seq,
                    "type": type_,
                    "at": at,
                    "actor": actor,
                    "data": data,
                    "owner_id": owners.get((kind, sid)),
                }
            )
        if self.dialect == "sqlite":
            last = int(self.conn.execute(_EVENT_LAST_ID).scalar_one())
            ids = list(range(last + 1, last + 1 + len(rows)))
            execute_many(
                self.conn,
                _EVENT_INSERT_IDS,
                [{"id": i, **r} for i, r in zip(ids, rows, strict=True)],
            )
        else:
            ids = [int(i) for i in self.conn.execute(_EVENT_INSERT, rows).scalars()]
        added = [
            Event(
                i,
                r["subject_kind"],
                r["subject_id"],
                r["seq"],
                r["type"],
                r["at"],
                r["actor"],
                r["data"],
                r["owner_id"],
            )
            for i, r in zip(ids, rows, strict=True)
        ]
        self._events_added(added)
        return added

    def _subject_owners(self, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        found = {k: self.owners.get(k) for k in subjects if k in self.owners}
        missing: dict[str, list[str]] = {}
        for kind, sid in subjects:
            if (kind, sid) not in found and kind in SUBJECT_TABLES:
                missing.setdefault(kind, []).append(sid)
        for kind, sids in missing.items():
            table = SUBJECT_TABLES[kind]
            q = sa.select(table.c.id, table.c.owner_id).where(table.c.id.in_(sids))
            for sid, owner in self.conn.execute(q):
                found[(kind, sid)] = owner
                self.owners.put((kind, sid), owner)
        return found

    def list_events(
        self,
        *,
        subject_kind: str | None = None,
        subject_id: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        owner_id: str | None = None,
        types: list[str] | None = None,
        subject_ids: list[str] | None = None,
    ) -> list[Event]:
        e = t.events.c
        q = t.events.select().order_by(e.id).limit(limit)
        if subject_kind is not None:
            q = q.where(e.subject_kind == subject_kind)
        if subject_id is not None:
            q = q.where(e.subject_id == subject_id)
        if subject_ids is not None:
            q = q.where(e.subject_id.in_(subject_ids))
        if after_id is not None:
            q = q.where(e.id > after_id)
        if owner_id is not None:
            q = q.where(e.owner_id == owner_id)
        if types:
            q = q.where(sa.or_(*(e.type.like(like_pattern(p), escape="\\") for p in types)))
        return [_event(row) for row in self.conn.execute(q)]

    def last_event_id(self) -> int:
        return int(self.conn.execute(sa.select(sa.func.max(t.events.c.id))).scalar() or 0)

    # -- products and staged files --------------------------------------------------------
    def add_product(self, product: Product) -> None:
        # Product's fields are the table's columns.
        self.conn.execute(t.products.insert().values(**dataclasses.asdict(product)))

    def list_products(self, run_id: str) -> list[Product]:
        q = t.products.select().where(t.products.c.run_id == run_id).order_by(t.products.c.name)
        return [Product(**dict(row._mapping)) for row in self.conn.execute(q)]

    def get_product(self, product_id: str) -> Product | None:
        row = self.conn.execute(t.products.select().where(t.products.c.id == product_id)).first()
        return Product(**dict(row._mapping)) if row else None

    def put_staged_file(self, staged: StagedFile) -> None:
        # StagedFile's fields are the table's columns.
        self._upsert(t.staged_files, dataclasses.asdict(staged), ["run_id", "input", "filename"])

    def delete_staged_file(self, run_id: str, input: str, filename: str) -> bool:
        f = t.staged_files.c
        q = t.staged_files.delete().where(
            f.run_id == run_id, f.input == input, f.filename == filename
        )
        return self.conn.execute(q).rowcount > 0

    def list_staged_files(self, run_id: str) -> list[StagedFile]:
        f = t.staged_files.c
        q = t.staged_files.select().where(f.run_id == run_id).order_by(f.input, f.created_at)
        return [StagedFile(**dict(row._mapping)) for row in self.conn.execute(q)]
