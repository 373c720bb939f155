"""Drives submitted graphs from committed run endings.

A commit listener hands the ids of runs that just ended to one worker thread; the worker
finds the graph node of each run and *advances* its graph: records the node's ending,
starts the nodes whose incoming conditions are now met (each a normal run, created in the
same transaction as the node's ``started`` record), skips those whose conditions can no
longer be met, and ends the graph once every node is final.  Everything is in the store:
after a restart :meth:`GraphDriver.recover` advances every active graph, so a graph
continues from what was committed.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any

from flowdeck import clock
from flowdeck.domain.graphs import (
    CANCELLED,
    NODE_FAILURES,
    NODE_FINAL,
    SKIPPED,
    STARTED,
    WAITING,
    Condition,
    Graph,
    GraphNode,
    GraphState,
    condition_met,
    incoming,
    split_port,
)
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import TERMINAL_STATES, Event, Run
from flowdeck.errors import FlowdeckError, NodeTaken
from flowdeck.services.graphs import Graphs
from flowdeck.services.run_files import is_file_input
from flowdeck.store.base import Tx

log = logging.getLogger("flowdeck.graphs")
RUN_ENDINGS = frozenset(f"run.{s.value}" for s in TERMINAL_STATES)
ACTIVE = [GraphState.RUNNING, GraphState.PAUSED, GraphState.STOPPING]


class GraphDriver:
    def __init__(self, graphs: Graphs) -> None:
        self.graphs = graphs
        self.store = graphs.store
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # the runs of graph nodes: only their endings concern the driver (the others cost
        # nothing, not even a query)
        self._runs: set[str] = set()

    # -- thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self.store.add_commit_listener(self._on_commit)
        self.graphs.driver = self
        self._thread = threading.Thread(target=self._main, name="flowdeck-graphs", daemon=True)
        self._thread.start()
        self.recover()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None
        self.graphs.driver = None

    def _on_commit(self, events: list[Event]) -> None:
        for e in events:
            if e.subject_kind == "graph" and e.type == "node.started" and e.data.get("run_id"):
                # started by another server of the database too: this one drives the graph
                # on as well (one decides at a time), and alone once that server is gone
                self._runs.add(str(e.data["run_id"]))
            elif e.subject_kind == "run" and e.type in RUN_ENDINGS and e.subject_id in self._runs:
                self._runs.discard(e.subject_id)
                self._queue.put(e.subject_id)

    def _main(self) -> None:
        every = self.graphs.settings.lease_ttl_s
        sweep_at = clock.monotonic() + every
        while True:
            try:
                run_id = self._queue.get(timeout=max(0.0, sweep_at - clock.monotonic()))
            except queue.Empty:
                run_id = ""
            if run_id is None:
                return
            if run_id:
                self._advance_run(run_id)
            if clock.monotonic() >= sweep_at:
                # A server of the database that died between deciding and starting nodes
                # left them waiting with nothing running to wake a driver: catch up.
                sweep_at = clock.monotonic() + every
                try:
                    self.recover()
                except Exception:
                    log.exception("advancing the active graphs failed")

    def _advance_run(self, run_id: str) -> None:
        try:
            with self.store.read() as tx:
                node = tx.graph_node_of_run(run_id)
            if node is not None:
                self.advance(node.graph_id)
        except Exception:
            log.exception("advancing the graph of run %s failed", run_id)

    def recover(self) -> None:
        """Advance every active graph (after a restart: catch up with what ended)."""
        with self.store.read() as tx:
            active = tx.list_graphs(None, states=ACTIVE, limit=10**6)
            for graph in active:
                self._runs.update(n.run_id for n in tx.list_graph_nodes(graph.id) if n.run_id)
        for graph in active:
            try:
                self.advance(graph.id)
            except Exception:
                log.exception("recovering graph %s failed", graph.id)

    # -- advancing -----------------------------------------------------------------------------
    def advance(self, graph_id: str) -> None:
        """Bring the graph up to date; start what is ready (repeat while nodes start)."""
        with self.graphs.lock:
            for _ in range(10_000):
                with self.store.write() as tx:
                    graph = tx.lock_graph(graph_id)  # one server decides at a time
                    if graph is None or graph.state is GraphState.DRAFT:
                        return
                    ready = self._decide(tx, graph)
                if not ready:
                    return
                owner = self.graphs.owner_actor(graph)
                for name in ready:
                    self._start(graph, name, owner)

    def _decide(self, tx: Tx, graph: Graph) -> list[str]:
        """In one transaction: record ended runs, skip or cancel what cannot run, end the
        graph when all is final; return the nodes to start."""
        now = clock.now()
        nodes = {n.name: n for n in tx.list_graph_nodes(graph.id)}
        changed: dict[str, GraphNode] = {}

        def set_state(node: GraphNode, state: str, type_: str, **data: Any) -> None:
            new = dataclasses.replace(node, state=state, state_since=now, error=data.get("error"))
            nodes[node.name] = changed[node.name] = new
            self.graphs.event(tx, graph, type_, None, node=node.name, **data)

        for node in list(nodes.values()):
            if node.state == STARTED and node.run_id is not None:
                run = tx.get_run(node.run_id)
                if run is None:
                    set_state(node, CANCELLED, "node.cancelled", error="its run was deleted")
                elif not run.active:
                    set_state(node, run.state.value, f"node.{run.state.value}", run_id=run.id)
        ready: list[str] = []
        if graph.state is GraphState.RUNNING:
            ups = incoming(graph.definition)
            progress = True
            while progress:
                progress = False
                for name, sources in ups.items():
                    found = nodes.get(name)
                    if found is None or found.state != WAITING or name in ready:
                        continue
                    finals = [nodes[s].state if s in nodes else SKIPPED for s, _ in sources]
                    if any(state not in NODE_FINAL for state in finals):
                        continue
                    unmet = [
                        f"{src} is {state} (edge needs {cond.value})"
                        for (src, cond), state in zip(sources, finals, strict=True)
                        if not condition_met(cond, state)
                    ]
                    if unmet:
                        set_state(found, SKIPPED, "node.skipped", reason="; ".join(unmet))
                        progress = True
                    else:
                        ready.append(name)
        elif graph.state in (GraphState.STOPPING, GraphState.KILLED):
            for node in list(nodes.values()):
                if node.state == WAITING:
                    set_state(node, CANCELLED, "node.cancelled")
        tx.save_graph_nodes(list(changed.values()))
        if not ready and all(n.state in NODE_FINAL for n in nodes.values()):
            self._finish(tx, graph, nodes)
        return ready

    def _finish(self, tx: Tx, graph: Graph, nodes: dict[str, GraphNode]) -> None:
        if graph.state is GraphState.STOPPING:
            target = GraphState.CANCELLED
        elif graph.state in (GraphState.RUNNING, GraphState.PAUSED):
            handled = {
                e["from"]
                for e in graph.edges
                if Condition(e["condition"]) in (Condition.FAILED, Condition.COMPLETED)
            }
            failed = sorted(
                n.name
                for n in nodes.values()
                if n.name not in handled
                and (
                    n.state in NODE_FAILURES
                    or (n.run_id is not None and n.state in ("cancelled", "killed"))
                )
            )
            target = GraphState.FAILED if failed else GraphState.SUCCEEDED
            if failed:
                error = {"nodes": failed, "message": "node(s) failed: " + ", ".join(failed)}
                graph = tx.update_graph(graph.id, error=error)
        else:
            return
        now = clock.now()
        old = graph.state
        graph = tx.update_graph(graph.id, state=target, state_since=now, finished_at=now)
        self.graphs.event(
            tx,
            graph,
            f"graph.{target.value}",
            None,
            **{"from": old.value},
            **({"error": graph.error} if graph.error else {}),
        )

    def _start(self, graph: Graph, name: str, owner: Actor) -> None:
        """Create the node's run (queued) with its bound inputs; a refusal fails the node."""
        node = graph.nodes[name]
        params = dict(node.get("params") or {})
        files: dict[str, list[str]] = {}
        try:
            with self.store.read() as tx:
                wf = self.graphs.workflows.resolve(tx, owner, node["workflow"])
                upstream: dict[str, Run | None] = {}
                for b in graph.bindings:
                    dst, inp = split_port(b["to"])
                    if dst != name:
                        continue
                    src, out = split_port(b["from"])
                    if src not in upstream:
                        rec = next(
                            (n for n in tx.list_graph_nodes(graph.id) if n.name == src), None
                        )
                        upstream[src] = tx.get_run(rec.run_id) if rec and rec.run_id else None
                    run = upstream[src]
                    value = run.outputs.get(out) if run is not None else None
                    if value is None:
                        continue
                    spec_inp = self.graphs.runs.spec_of(wf).inputs.get(inp)
                    if spec_inp is not None and is_file_input(spec_inp):
                        files[inp] = (
                            [str(v) for v in value] if isinstance(value, list) else [str(value)]
                        )
                    else:
                        params[inp] = value
            now = clock.now()

            def link(tx: Tx, run: Run) -> None:
                tx.lock_graph(graph.id)  # another server may have started it meanwhile
                found = next((n for n in tx.list_graph_nodes(graph.id) if n.name == name), None)
                if found is not None and found.state != WAITING:
                    raise NodeTaken()  # the run is not created
                self._runs.add(run.id)  # before its commit: its ending cannot come first
                tx.save_graph_nodes([GraphNode(graph.id, name, STARTED, now, run.id)])
                self.graphs.event(tx, graph, "node.started", None, node=name, run_id=run.id)

            self.graphs.runs.create(
                owner,
                node["workflow"],
                params,
                node.get("resources") or {},
                [*node.get("tags", []), f"graph:{graph.id}", f"graph-node:{name}"],
                True,
                files=files,
                link=link,
            )
        except NodeTaken:
            return
        except FlowdeckError as exc:
            with self.store.write() as tx:
                now = clock.now()
                tx.save_graph_nodes([GraphNode(graph.id, name, "failed", now, None, exc.message)])
                self.graphs.event(tx, graph, "node.failed", None, node=name, error=exc.message)
