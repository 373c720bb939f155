"""The composition part of the store contract (graphs, nodes, run links, step cache, graph
events with their owner) on the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.composition import CHILD, RERUN, CacheEntry, RunLink
from flowdeck.domain.graphs import Graph, GraphNode, GraphState
from flowdeck.domain.runs import Run, RunState
from flowdeck.store import Store, open_store
from tests.helpers import clean_sql_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        yield open_store("memory://")
        return
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def _setup(store: Store) -> None:
    with store.write() as tx:
        for name in ("alice", "bob"):
            tx.add_user(User(f"u_{name}", name, Role.USER, AccountStatus.ACTIVE, "x", T0, T0))
        for rid in ("run_a", "run_b", "run_c"):
            tx.add_run(Run(rid, "u_alice", None, "alice/w@1", RunState.SUCCEEDED, T0, T0))


def graph(gid: str = "graph_1", owner: str = "u_alice") -> Graph:
    return Graph(
        gid,
        owner,
        "g",
        GraphState.DRAFT,
        T0,
        T0,
        {"nodes": {"a": {"workflow": "w@1"}}, "edges": [], "bindings": []},
    )


def test_graphs_round_trip_update_list_and_delete(store: Store) -> None:
    _setup(store)
    with store.write() as tx:
        tx.add_graph(graph())
        tx.add_graph(graph("graph_2", "u_bob"))
    with store.write() as tx:
        got = tx.update_graph("graph_1", state=GraphState.RUNNING, submitted_at=T0)
    assert got.state is GraphState.RUNNING and got.definition["nodes"]["a"]["workflow"] == "w@1"
    with store.read() as tx:
        assert tx.get_graph("graph_1") == got
        assert [g.id for g in tx.list_graphs(None)] == ["graph_2", "graph_1"]
        assert [g.id for g in tx.list_graphs("u_alice")] == ["graph_1"]
        assert [g.id for g in tx.list_graphs(None, states=[GraphState.DRAFT])] == ["graph_2"]
        assert [g.id for g in tx.list_graphs(None, after_id="graph_2")] == ["graph_1"]
    with store.write() as tx:
        assert tx.delete_graph("graph_2") is True
        assert tx.delete_graph("graph_2") is False
    with store.read() as tx:
        assert tx.get_graph("graph_2") is None


def test_graph_nodes_are_upserted_and_found_by_run(store: Store) -> None:
    _setup(store)
    with store.write() as tx:
        tx.add_graph(graph())
        tx.save_graph_nodes(
            [GraphNode("graph_1", "b", "waiting", T0), GraphNode("graph_1", "a", "waiting", T0)]
        )
    later = T0 + timedelta(seconds=1)
    with store.write() as tx:
        tx.save_graph_nodes([GraphNode("graph_1", "a", "started", later, "run_a")])
    with store.read() as tx:
        nodes = tx.list_graph_nodes("graph_1")
        assert [(n.name, n.state, n.run_id) for n in nodes] == [
            ("a", "started", "run_a"),
            ("b", "waiting", None),
        ]
        assert tx.graph_node_of_run("run_a") == nodes[0]
        assert tx.graph_node_of_run("run_b") is None


def test_graph_events_carry_the_graphs_owner(store: Store) -> None:
    _setup(store)
    with store.write() as tx:
        tx.add_graph(graph("graph_9", "u_bob"))
        tx.add_events(
            [
                ("graph", "graph_9", "graph.created", T0, "bob", {}),
                ("run", "run_a", "run.succeeded", T0, None, {}),
            ]
        )
    with store.read() as tx:
        bobs = tx.list_events(owner_id="u_bob")
        assert [(e.subject_kind, e.type, e.seq) for e in bobs] == [("graph", "graph.created", 1)]
        assert [e.type for e in tx.list_events(owner_id="u_alice")] == ["run.succeeded"]
    with store.write() as tx:
        tx.delete_graph("graph_9")
    with store.read() as tx:
        assert tx.list_events(subject_kind="graph") == []


def test_run_links_and_the_step_cache(store: Store) -> None:
    _setup(store)
    with store.write() as tx:
        tx.add_run_link(RunLink("run_b", CHILD, "run_a", "sub", 2))
        tx.add_run_link(RunLink("run_c", RERUN, "run_a", None))
        tx.save_cache_entries(
            [
                CacheEntry("run_a", "s1", -1, "k1", "u_alice", None, T0, {"out": "/x"}),
                CacheEntry("run_b", "s1", -1, "k1", "u_alice", None, T0 + timedelta(1), {}),
            ]
        )
    with store.write() as tx:  # replaced
        tx.save_cache_entries(
            [CacheEntry("run_a", "s1", -1, "k2", "u_alice", None, T0, {"out": "/y"})]
        )
    with store.read() as tx:
        assert tx.get_run_link("run_b") == RunLink("run_b", CHILD, "run_a", "sub", 2)
        assert tx.get_run_link("run_a") is None
        assert [lk.run_id for lk in tx.list_run_links("run_a", CHILD)] == ["run_b"]
        assert [lk.run_id for lk in tx.list_run_links("run_a", RERUN)] == ["run_c"]
        [entry] = tx.list_cache_entries("run_a")
        assert entry.key == "k2" and entry.outputs == {"out": "/y"}
        found = tx.find_cache_entry("u_alice", "k1", None)
        assert found is not None and found.run_id == "run_b"
        assert tx.find_cache_entry("u_bob", "k1", None) is None
    with store.write() as tx:
        tx.delete_run("run_b")
    with store.read() as tx:
        assert tx.get_run_link("run_b") is None
        assert tx.find_cache_entry("u_alice", "k1", None) is None
