"""The SQL store's composition operations: graphs and their nodes, run links, the step
cache."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from flowdeck.domain.composition import CacheEntry, RunLink
from flowdeck.domain.graphs import Graph, GraphNode, GraphState
from flowdeck.store import schema as t
from flowdeck.store.sql_many import execute_many

_GRAPH_FIELDS = (
    "owner_id",
    "name",
    "definition",
    "created_at",
    "state_since",
    "submitted_at",
    "finished_at",
    "error",
)


def _graph(row: Any) -> Graph:
    m = row._mapping
    return Graph(
        id=m["id"],
        owner_id=m["owner_id"],
        name=m["name"],
        state=GraphState(m["state"]),
        created_at=m["created_at"],
        state_since=m["state_since"],
        definition=m["definition"] or {},
        submitted_at=m["submitted_at"],
        finished_at=m["finished_at"],
        error=m["error"],
    )


def _node(row: Any) -> GraphNode:
    m = row._mapping
    return GraphNode(
        m["graph_id"], m["name"], m["state"], m["state_since"], m["run_id"], m["error"]
    )


def _entry(row: Any) -> CacheEntry:
    m = row._mapping
    return CacheEntry(
        m["run_id"],
        m["step"],
        m["idx"],
        m["key"],
        m["owner_id"],
        m["workflow_id"],
        m["created_at"],
        m["outputs"] or {},
    )


_CACHE_COLUMNS = (
    "run_id",
    "step",
    "idx",
    "key",
    "owner_id",
    "workflow_id",
    "created_at",
    "outputs",
)


@functools.cache
def _cache_upsert(dialect: str) -> Any:
    """One upsert statement for cache entries, built once and run with many rows."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t.step_cache)
    stmt = insert.values({c: sa.bindparam(c) for c in _CACHE_COLUMNS})
    keys = ("run_id", "step", "idx")
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: stmt.excluded[c] for c in _CACHE_COLUMNS if c not in keys},
    )


class SqlGraphsMixin:
    conn: Connection
    dialect: str

    _upsert: Callable[[sa.Table, dict[str, Any], list[str]], None]

    # -- graphs ---------------------------------------------------------------------------
    def add_graph(self, graph: Graph) -> None:
        values = {f: getattr(graph, f) for f in _GRAPH_FIELDS}
        self.conn.execute(t.graphs.insert().values(id=graph.id, state=graph.state.value, **values))

    def get_graph(self, graph_id: str) -> Graph | None:
        row = self.conn.execute(t.graphs.select().where(t.graphs.c.id == graph_id)).first()
        return _graph(row) if row else None

    def lock_graph(self, graph_id: str) -> Graph | None:
        query = t.graphs.select().where(t.graphs.c.id == graph_id)
        if self.dialect == "postgresql":  # SQLite: a write transaction holds the database
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return _graph(row) if row else None

    def update_graph(self, graph_id: str, **changes: Any) -> Graph:
        values = {k: (v.value if isinstance(v, GraphState) else v) for k, v in changes.items()}
        self.conn.execute(t.graphs.update().where(t.graphs.c.id == graph_id).values(**values))
        graph = self.get_graph(graph_id)
        assert graph is not None
        return graph

    def delete_graph(self, graph_id: str) -> bool:
        for table in (t.events, t.event_counters):
            self.conn.execute(
                table.delete().where(
                    table.c.subject_kind == "graph", table.c.subject_id == graph_id
                )
            )
        self.conn.execute(t.graph_nodes.delete().where(t.graph_nodes.c.graph_id == graph_id))
        return self.conn.execute(t.graphs.delete().where(t.graphs.c.id == graph_id)).rowcount > 0

    def list_graphs(
        self,
        viewer_id: str | None,
        *,
        states: list[GraphState] | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Graph]:
        g = t.graphs.c
        q = t.graphs.select().order_by(g.id.desc()).limit(limit)
        if viewer_id is not None:
            q = q.where(g.owner_id == viewer_id)
        if states:
            q = q.where(g.state.in_([s.value for s in states]))
        if after_id is not None:
            q = q.where(g.id < after_id)
        return [_graph(row) for row in self.conn.execute(q)]

    def save_graph_nodes(self, nodes: list[GraphNode]) -> None:
        for node in nodes:
            self._upsert(
                t.graph_nodes,
                {
                    "graph_id": node.graph_id,
                    "name": node.name,
                    "state": node.state,
                    "state_since": node.state_since,
                    "run_id": node.run_id,
                    "error": node.error,
                },
                ["graph_id", "name"],
            )

    def list_graph_nodes(self, graph_id: str) -> list[GraphNode]:
        c = t.graph_nodes.c
        q = t.graph_nodes.select().where(c.graph_id == graph_id).order_by(c.name)
        return [_node(row) for row in self.conn.execute(q)]

    def graph_node_of_run(self, run_id: str) -> GraphNode | None:
        row = self.conn.execute(
            t.graph_nodes.select().where(t.graph_nodes.c.run_id == run_id)
        ).first()
        return _node(row) if row else None

    # -- run links ------------------------------------------------------------------------
    def add_run_link(self, link: RunLink) -> None:
        self.conn.execute(
            t.run_links.insert().values(
                run_id=link.run_id,
                kind=link.kind,
                parent_id=link.parent_id,
                step=link.step,
                idx=link.index,
            )
        )

    def get_run_link(self, run_id: str) -> RunLink | None:
        row = self.conn.execute(t.run_links.select().where(t.run_links.c.run_id == run_id)).first()
        if row is None:
            return None
        m = row._mapping
        return RunLink(m["run_id"], m["kind"], m["parent_id"], m["step"], m["idx"])

    def list_run_links(self, parent_id: str, kind: str) -> list[RunLink]:
        c = t.run_links.c
        q = (
            t.run_links.select()
            .where(c.parent_id == parent_id, c.kind == kind)
            .order_by(c.step, c.idx, c.run_id)
        )
        return [RunLink(r.run_id, r.kind, r.parent_id, r.step, r.idx) for r in self.conn.execute(q)]

    # -- step cache -----------------------------------------------------------------------
    def save_cache_entries(self, entries: list[CacheEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "run_id": e.run_id,
                "step": e.step,
                "idx": e.index,
                "key": e.key,
                "owner_id": e.owner_id,
                "workflow_id": e.workflow_id,
                "created_at": e.created_at,
                "outputs": e.outputs,
            }
            for e in entries
        ]
        execute_many(self.conn, _cache_upsert(self.dialect), rows)

    def list_cache_entries(self, run_id: str) -> list[CacheEntry]:
        c = t.step_cache.c
        q = t.step_cache.select().where(c.run_id == run_id).order_by(c.step, c.idx)
        return [_entry(row) for row in self.conn.execute(q)]

    def find_cache_entry(
        self, owner_id: str, key: str, workflow_id: str | None
    ) -> CacheEntry | None:
        c = t.step_cache.c
        q = (
            t.step_cache.select()
            .where(c.owner_id == owner_id, c.key == key, c.workflow_id == workflow_id)
            .order_by(c.created_at.desc())
            .limit(1)
        )
        row = self.conn.execute(q).first()
        return _entry(row) if row else None
