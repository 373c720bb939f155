"""Run graphs: build a draft (several calls), validate it as a whole, submit it, watch and
control it.  A graph is a layer above runs: each node becomes a normal run of its owner
(tagged ``graph:<id>``) once its dependencies are met — see :mod:`graph_driver`, which
advances graphs from committed run endings."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.graphs import (
    CANCELLED,
    GRAPH_KIND,
    GRAPH_TERMINAL,
    STARTED,
    WAITING,
    Condition,
    Graph,
    GraphNode,
    GraphState,
    check_graph,
    empty_definition,
    graph_transition,
    split_port,
)
from flowdeck.domain.privilege import Access, Actor, allowed
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.spec import STEP_PATTERN, WorkflowSpec
from flowdeck.domain.text import check_name
from flowdeck.domain.workflows import REF_PATTERN
from flowdeck.errors import FlowdeckError, InvalidInput, NotFound
from flowdeck.ids import new_id
from flowdeck.services.cwl_jobs import has_job, job_params
from flowdeck.services.runs import Runs
from flowdeck.services.workflows import Workflows
from flowdeck.store.base import Store, Tx

MAX_NODES = 200


@dataclasses.dataclass(frozen=True, slots=True)
class NodeView:
    node: GraphNode
    workflow: str
    run: Run | None

    @property
    def state(self) -> str:
        if self.node.state == STARTED and self.run is not None:
            return self.run.state.value
        return self.node.state


@dataclasses.dataclass(frozen=True, slots=True)
class GraphView:
    graph: Graph
    nodes: list[NodeView]

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.state] = counts.get(n.state, 0) + 1
        return counts


def _check_name(kind: str, name: str, pattern: str) -> None:
    if not isinstance(name, str) or re.fullmatch(pattern, name) is None:
        raise InvalidInput(f"invalid {kind} name {name!r}", field=kind)


class Graphs:
    def __init__(self, store: Store, settings: Settings, runs: Runs, workflows: Workflows) -> None:
        self.store = store
        self.settings = settings
        self.runs = runs
        self.workflows = workflows
        # Every change of a graph's state in this process happens under this lock (the
        # driver's advances and the users' commands), so that they never interleave.
        self.lock = threading.RLock()
        self.driver: Any = None  # graph_driver.GraphDriver once started

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def load(tx: Tx, actor: Actor, graph_id: str, access: Access = Access.READ) -> Graph:
        """The graph if ``actor`` may see it (owner or admin), else :class:`NotFound`; to
        change it, locked until the transaction ends (several servers may drive it)."""
        graph = tx.lock_graph(graph_id) if access is Access.WRITE else tx.get_graph(graph_id)
        if graph is None or not allowed(actor, graph.owner_id, access):
            raise NotFound(f"no graph {graph_id}")
        return graph

    @staticmethod
    def event(tx: Tx, graph: Graph, type_: str, actor: str | None, **data: Any) -> None:
        tx.add_event(GRAPH_KIND, graph.id, type_, clock.now(), actor, data)

    def _edit(self, actor: Actor, graph_id: str, change: Any, what: str, **data: Any) -> Graph:
        with self.lock, self.store.write() as tx:
            graph = self.load(tx, actor, graph_id, Access.WRITE)
            graph_transition(graph.state, "edit")
            definition = _copy(graph.definition)
            change(definition)
            if len(definition["nodes"]) > MAX_NODES:
                raise InvalidInput(f"a graph has at most {MAX_NODES} nodes", field="nodes")
            graph = tx.update_graph(graph.id, definition=definition)
            self.event(tx, graph, f"graph.{what}", actor.username, **data)
        return graph

    # -- drafts ------------------------------------------------------------------------------
    def create(
        self,
        actor: Actor,
        name: str,
        nodes: dict[str, dict[str, Any]] | None = None,
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        submit: bool = False,
    ) -> Graph:
        """A new draft with what is given; ``submit`` validates and starts it at once (a
        refusal stores nothing)."""
        check_name(name, field="name", what="graph name")
        definition = empty_definition()
        for node_name, node in (nodes or {}).items():
            _put_node(definition, node_name, node)
        for edge in edges or []:
            _add_edge(definition, edge)
        for binding in bindings or []:
            _add_binding(definition, binding)
        if len(definition["nodes"]) > MAX_NODES:
            raise InvalidInput(f"a graph has at most {MAX_NODES} nodes", field="nodes")
        now = clock.now()
        graph = Graph(new_id("graph"), actor.user_id, name, GraphState.DRAFT, now, now, definition)
        if submit:
            self._require_valid(actor, graph)
        with self.lock:
            with self.store.write() as tx:
                tx.add_graph(graph)
                self.event(tx, graph, "graph.created", actor.username, name=name)
                if submit:
                    graph = self._submit_in(tx, actor, graph)
            if submit:
                self.advance(graph.id)
        return graph

    def put_node(self, actor: Actor, graph_id: str, name: str, node: dict[str, Any]) -> Graph:
        return self._edit(
            actor,
            graph_id,
            lambda d: _put_node(d, name, node),
            "node_set",
            node=name,
            workflow=node.get("workflow"),
        )

    def delete_node(self, actor: Actor, graph_id: str, name: str) -> Graph:
        def change(d: dict[str, Any]) -> None:
            if name not in d["nodes"]:
                raise NotFound(f"graph {graph_id} has no node {name!r}", node=name)
            del d["nodes"][name]
            d["edges"] = [e for e in d["edges"] if name not in (e["from"], e["to"])]
            d["bindings"] = [
                b
                for b in d["bindings"]
                if name not in (split_port(b["from"])[0], split_port(b["to"])[0])
            ]

        return self._edit(actor, graph_id, change, "node_removed", node=name)

    def add_edge(self, actor: Actor, graph_id: str, edge: dict[str, Any]) -> Graph:
        return self._edit(actor, graph_id, lambda d: _add_edge(d, edge), "edge_added", **edge)

    def delete_edge(self, actor: Actor, graph_id: str, source: str, target: str) -> Graph:
        def change(d: dict[str, Any]) -> None:
            kept = [e for e in d["edges"] if (e["from"], e["to"]) != (source, target)]
            if len(kept) == len(d["edges"]):
                raise NotFound(f"graph {graph_id} has no edge {source} → {target}")
            d["edges"] = kept

        return self._edit(actor, graph_id, change, "edge_removed", **{"from": source, "to": target})

    def add_binding(self, actor: Actor, graph_id: str, binding: dict[str, Any]) -> Graph:
        return self._edit(
            actor, graph_id, lambda d: _add_binding(d, binding), "binding_added", **binding
        )

    def delete_binding(self, actor: Actor, graph_id: str, target: str) -> Graph:
        def change(d: dict[str, Any]) -> None:
            kept = [b for b in d["bindings"] if b["to"] != target]
            if len(kept) == len(d["bindings"]):
                raise NotFound(f"graph {graph_id} has no binding to {target}")
            d["bindings"] = kept

        return self._edit(actor, graph_id, change, "binding_removed", to=target)

    # -- validate and submit -----------------------------------------------------------------
    def problems(self, actor: Actor, graph: Graph) -> list[dict[str, str]]:
        """Everything that stops the graph from being submitted."""
        owner = self.owner_actor(graph, actor)
        specs: dict[str, WorkflowSpec] = {}
        problems: list[dict[str, str]] = []
        bound = {b["to"] for b in graph.bindings}
        with self.store.read() as tx:
            for name, node in graph.nodes.items():
                where = f"nodes.{name}"
                try:
                    wf = self.workflows.resolve(tx, owner, node["workflow"])
                except FlowdeckError as exc:
                    problems.append({"where": where, "message": f"node {name!r}: {exc.message}"})
                    continue
                spec = specs[name] = self.runs.spec_of(wf)
                params = node.get("params") or {}
                try:
                    params = job_params(spec, params, self.settings.data_root)  # CWL jobs
                    self.runs._check_params(spec, params)
                    self.runs._check_resources(owner, node.get("resources") or {})
                except FlowdeckError as exc:
                    problems.append({"where": where, "message": f"node {name!r}: {exc.message}"})
                    continue
                for inp_name, inp in spec.inputs.items():
                    given = inp_name in params or f"{name}.{inp_name}" in bound
                    given = given or has_job(spec, params)  # a CWL job gives every input
                    if inp.is_required and inp.default is None and not given:
                        problems.append(
                            {
                                "where": where,
                                "message": f"node {name!r}: required input {inp_name!r} has "
                                "no value: set it in params or bind an upstream output to it",
                            }
                        )
        problems.extend(check_graph(graph.definition, specs))
        return problems

    def validate(self, actor: Actor, graph_id: str) -> list[dict[str, str]]:
        with self.store.read() as tx:
            graph = self.load(tx, actor, graph_id)
        return self.problems(actor, graph)

    def _require_valid(self, actor: Actor, graph: Graph) -> None:
        problems = self.problems(actor, graph)
        if problems:
            raise InvalidInput(
                "the graph cannot be submitted: " + "; ".join(p["message"] for p in problems),
                errors=problems,
            )

    def _submit_in(self, tx: Tx, actor: Actor, graph: Graph) -> Graph:
        target = graph_transition(graph.state, "submit")
        now = clock.now()
        graph = tx.update_graph(graph.id, state=target, state_since=now, submitted_at=now)
        tx.save_graph_nodes([GraphNode(graph.id, n, WAITING, now) for n in graph.nodes])
        self.event(tx, graph, "graph.running", actor.username, **{"from": "draft"})
        return graph

    def submit(self, actor: Actor, graph_id: str) -> Graph:
        with self.store.read() as tx:
            graph = self.load(tx, actor, graph_id, Access.WRITE)
        graph_transition(graph.state, "submit")
        self._require_valid(actor, graph)
        with self.lock:
            with self.store.write() as tx:
                graph = self.load(tx, actor, graph_id, Access.WRITE)
                graph = self._submit_in(tx, actor, graph)
            self.advance(graph.id)
        return self.get(actor, graph_id).graph

    def advance(self, graph_id: str) -> None:
        if self.driver is not None:
            self.driver.advance(graph_id)

    # -- reading -------------------------------------------------------------------------------
    def get(self, actor: Actor, graph_id: str) -> GraphView:
        with self.store.read() as tx:
            graph = self.load(tx, actor, graph_id)
            return self.view(tx, graph)

    @staticmethod
    def view(tx: Tx, graph: Graph) -> GraphView:
        stored = {n.name: n for n in tx.list_graph_nodes(graph.id)}
        views = []
        for name, node in graph.nodes.items():
            rec = stored.get(name) or GraphNode(graph.id, name, WAITING, graph.state_since)
            run = tx.get_run(rec.run_id) if rec.run_id else None
            views.append(NodeView(rec, str(node["workflow"]), run))
        return GraphView(graph, views)

    def list_graphs(
        self,
        actor: Actor,
        *,
        states: list[GraphState] | None = None,
        after_id: str | None = None,
        limit: int = 50,
    ) -> list[Graph]:
        with self.store.read() as tx:
            viewer = None if actor.is_admin else actor.user_id
            return tx.list_graphs(viewer, states=states, after_id=after_id, limit=limit)

    def owner_actor(self, graph: Graph, fallback: Actor | None = None) -> Actor:
        """The graph's owner as an actor: nodes run as their graph's owner."""
        if fallback is not None and fallback.user_id == graph.owner_id:
            return fallback
        with self.store.read() as tx:
            user = tx.get_user(graph.owner_id)
        if user is None:
            raise NotFound(f"the owner of graph {graph.id} is gone")
        return Actor(user.id, user.username, user.role)

    # -- control ---------------------------------------------------------------------------------
    def control(self, actor: Actor, graph_id: str, action: str, **options: Any) -> GraphView:
        """pause, resume, stop or kill the whole graph: its waiting nodes and its runs."""
        with self.lock:
            with self.store.write() as tx:
                graph = self.load(tx, actor, graph_id, Access.WRITE)
                target = graph_transition(graph.state, action)
                now = clock.now()
                changes: dict[str, Any] = {"state": target, "state_since": now}
                if target in GRAPH_TERMINAL:
                    changes["finished_at"] = now
                old = graph.state
                graph = tx.update_graph(graph.id, **changes)
                self.event(
                    tx, graph, f"graph.{target.value}", actor.username, **{"from": old.value}
                )
                if action in ("stop", "kill"):
                    waiting = [
                        dataclasses.replace(n, state=CANCELLED, state_since=now)
                        for n in tx.list_graph_nodes(graph.id)
                        if n.state == WAITING
                    ]
                    tx.save_graph_nodes(waiting)
                    for n in waiting:
                        self.event(tx, graph, "node.cancelled", actor.username, node=n.name)
                nodes = tx.list_graph_nodes(graph.id)
            owner = self.owner_actor(graph, actor)
            for node in nodes:
                if node.state == STARTED and node.run_id is not None:
                    self._control_run(owner, node.run_id, action, options)
            self.advance(graph.id)
        return self.get(actor, graph_id)

    def _control_run(self, owner: Actor, run_id: str, action: str, options: dict[str, Any]) -> None:
        with self.store.read() as tx:
            run = tx.get_run(run_id)
        if run is None or not run.active:
            return
        if action == "pause" and run.state is not RunState.RUNNING:
            return  # queued runs wait: the graph starts no new node while paused
        if action == "resume" and run.state is not RunState.PAUSED:
            return
        if action == "stop":
            options = {"grace_s": options.get("grace_s", self.settings.stop_grace_s)}
        with contextlib.suppress(FlowdeckError):  # it ended meanwhile: the driver records it
            self.runs.control(owner, run_id, action, **options)

    def delete(self, actor: Actor, graph_id: str) -> None:
        with self.lock, self.store.write() as tx:
            graph = self.load(tx, actor, graph_id, Access.WRITE)
            graph_transition(graph.state, "delete")
            tx.delete_graph(graph.id)
            tx.add_audit(
                clock.now(),
                "graph.delete",
                actor_id=actor.user_id,
                actor_name=actor.username,
                target=graph.id,
            )


# -- definition editing (pure) -------------------------------------------------------------------
def _copy(definition: dict[str, Any]) -> dict[str, Any]:
    base = empty_definition()
    return {
        "nodes": {k: dict(v) for k, v in (definition.get("nodes") or base["nodes"]).items()},
        "edges": [dict(e) for e in definition.get("edges") or []],
        "bindings": [dict(b) for b in definition.get("bindings") or []],
    }


def _put_node(definition: dict[str, Any], name: str, node: dict[str, Any]) -> None:
    _check_name("node", name, STEP_PATTERN)
    workflow = node.get("workflow")
    if not isinstance(workflow, str) or re.fullmatch(REF_PATTERN, workflow) is None:
        raise InvalidInput(
            f"node {name!r}: workflow must be name@version or owner/name@version",
            field="workflow",
        )
    tags = [str(t) for t in node.get("tags") or []]
    for tag in tags:
        check_name(tag, field="tags", what=f"node {name!r}: tag")
    definition["nodes"][name] = {
        "workflow": workflow,
        "params": dict(node.get("params") or {}),
        "resources": dict(node.get("resources") or {}),
        "tags": tags,
    }


def _add_edge(definition: dict[str, Any], edge: dict[str, Any]) -> None:
    try:
        condition = Condition(edge.get("condition") or "succeeded")
    except ValueError as exc:
        raise InvalidInput(
            "an edge's condition is succeeded, completed or failed", field="condition"
        ) from exc
    source, target = str(edge.get("from", "")), str(edge.get("to", ""))
    _check_name("node", source, STEP_PATTERN)
    _check_name("node", target, STEP_PATTERN)
    definition["edges"] = [
        e for e in definition["edges"] if (e["from"], e["to"]) != (source, target)
    ] + [{"from": source, "to": target, "condition": condition.value}]


def _add_binding(definition: dict[str, Any], binding: dict[str, Any]) -> None:
    source, target = str(binding.get("from", "")), str(binding.get("to", ""))
    for label, port in (("from", source), ("to", target)):
        node, _, name = port.partition(".")
        if not node or not name:
            raise InvalidInput(
                f"binding {label} must be node.output / node.input, not {port!r}", field=label
            )
        _check_name("node", node, STEP_PATTERN)
    definition["bindings"] = [b for b in definition["bindings"] if b["to"] != target] + [
        {"from": source, "to": target}
    ]
