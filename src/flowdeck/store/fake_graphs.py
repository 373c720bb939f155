"""The in-memory store's composition operations (same contract as :mod:`sql_graphs`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from flowdeck.domain.composition import CacheEntry, RunLink
from flowdeck.domain.graphs import Graph, GraphNode, GraphState
from flowdeck.errors import AlreadyExists, NotFound
from flowdeck.store.base import REFERENCE_GONE

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeGraphsMixin:
    s: _State

    def add_graph(self, graph: Graph) -> None:
        if graph.owner_id not in self.s.users:
            raise NotFound(REFERENCE_GONE)
        if graph.id in self.s.graphs:
            raise AlreadyExists("the graph exists")
        self.s.graphs[graph.id] = graph

    def get_graph(self, graph_id: str) -> Graph | None:
        return self.s.graphs.get(graph_id)

    def update_graph(self, graph_id: str, **changes: Any) -> Graph:
        self.s.graphs[graph_id] = dataclasses.replace(self.s.graphs[graph_id], **changes)
        return self.s.graphs[graph_id]

    def delete_graph(self, graph_id: str) -> bool:
        self.s.graph_nodes = {k: v for k, v in self.s.graph_nodes.items() if k[0] != graph_id}
        self.s.events = [
            e for e in self.s.events if not (e.subject_kind == "graph" and e.subject_id == graph_id)
        ]
        self.s.counters.pop(("graph", graph_id), None)
        return self.s.graphs.pop(graph_id, None) is not None

    def list_graphs(
        self,
        viewer_id: str | None,
        *,
        states: list[GraphState] | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Graph]:
        rows = sorted(
            (
                g
                for g in self.s.graphs.values()
                if viewer_id in (None, g.owner_id)
                and (not states or g.state in states)
                and (after_id is None or g.id < after_id)
            ),
            key=lambda g: g.id,
            reverse=True,
        )
        return rows[:limit]

    def save_graph_nodes(self, nodes: list[GraphNode]) -> None:
        for node in nodes:
            self.s.graph_nodes[(node.graph_id, node.name)] = node

    def list_graph_nodes(self, graph_id: str) -> list[GraphNode]:
        return [v for k, v in sorted(self.s.graph_nodes.items()) if k[0] == graph_id]

    def graph_node_of_run(self, run_id: str) -> GraphNode | None:
        return next((n for n in self.s.graph_nodes.values() if n.run_id == run_id), None)

    def add_run_link(self, link: RunLink) -> None:
        if link.run_id not in self.s.runs:
            raise NotFound(REFERENCE_GONE)
        if link.run_id in self.s.run_links:
            raise AlreadyExists("the run already has a link")
        self.s.run_links[link.run_id] = link

    def get_run_link(self, run_id: str) -> RunLink | None:
        return self.s.run_links.get(run_id)

    def list_run_links(self, parent_id: str, kind: str) -> list[RunLink]:
        return sorted(
            (
                link
                for link in self.s.run_links.values()
                if link.parent_id == parent_id and link.kind == kind
            ),
            key=lambda link: (link.step or "", link.index, link.run_id),
        )

    def save_cache_entries(self, entries: list[CacheEntry]) -> None:
        for e in entries:
            self.s.cache[(e.run_id, e.step, e.index)] = e

    def list_cache_entries(self, run_id: str) -> list[CacheEntry]:
        return [v for k, v in sorted(self.s.cache.items()) if k[0] == run_id]

    def find_cache_entry(
        self, owner_id: str, key: str, workflow_id: str | None
    ) -> CacheEntry | None:
        found = [
            e
            for e in self.s.cache.values()
            if e.owner_id == owner_id and e.key == key and e.workflow_id == workflow_id
        ]
        return max(found, key=lambda e: e.created_at) if found else None
