"""Two servers (contexts) on one PostgreSQL database drive the same graph: each hears of
the other's run endings (store/pg_listen), and one decides at a time, so every node runs
exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from flowdeck.domain.privilege import Actor
from flowdeck.domain.workflows import Visibility
from flowdeck.services.context import build_context
from tests.helpers import STRONG, fresh_pg_database, make_settings

SLOW = """
name: slow
version: "1"
steps:
  s: {run: [sleep, "1"]}
"""
QUICK = """
name: quick
version: "1"
steps:
  q: {run: ["true"]}
"""
FAN = 6


def test_a_graph_driven_by_two_servers_starts_each_node_once(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        settings = make_settings(tmp_path / "data", database_url=url)
        a = build_context(settings)
        b = build_context(settings)
        try:
            a.start_scheduler()
            user = a.accounts.create_user("owner", STRONG)
            actor = Actor(user.id, user.username, user.role)
            for spec in (SLOW, QUICK):
                a.workflows.push_spec(actor, spec.encode(), Visibility.PRIVATE)
            nodes = {"first": {"workflow": "slow@1"}} | {
                f"n{i}": {"workflow": "quick@1"} for i in range(FAN)
            }
            edges = [{"from": "first", "to": f"n{i}"} for i in range(FAN)]
            graph = a.graphs.create(actor, "fan", nodes, edges, submit=True)
            # B starts while `first` runs: it drives the graph too (its start recovers
            # active graphs) and hears of `first`'s ending from A
            b.start_scheduler()
            deadline = time.monotonic() + 60
            while a.graphs.get(actor, graph.id).graph.state.value not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, "the graph did not end"
                time.sleep(0.1)
            view = a.graphs.get(actor, graph.id)
            errors = {
                n.node.name: (n.node.state, n.node.error, n.run and (n.run.state, n.run.error))
                for n in view.nodes
                if n.node.state != "succeeded"
            }
            assert view.graph.state.value == "succeeded", errors
            runs = a.runs.list_runs(actor, tag=f"graph:{graph.id}", limit=100)
            per_node = sorted(next(t for t in r.tags if t.startswith("graph-node:")) for r in runs)
            assert per_node == sorted(f"graph-node:{n}" for n in nodes)
        finally:
            b.close()
            a.close()
