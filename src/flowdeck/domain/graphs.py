"""Run graphs: workflows of workflows, wired by edges (conditions) and bindings (data).

A graph is built up as a *draft* (nodes, edges, bindings; several calls), validated as a
whole and submitted.  Each node then becomes a normal run when its dependencies are met;
the graph's state follows :data:`GRAPH_POLICY` like a run's follows ``RUN_POLICY``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowdeck.domain.expressions import ExpressionError, parse_template
from flowdeck.domain.runs import IllegalTransition, RunState
from flowdeck.domain.spec import WorkflowSpec

GRAPH_KIND = "graph"


class GraphState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"


class Condition(StrEnum):
    SUCCEEDED = "succeeded"  # the upstream run succeeded
    COMPLETED = "completed"  # the upstream run ended, whatever its outcome
    FAILED = "failed"  # the upstream run failed


G = GraphState
GRAPH_TERMINAL = frozenset({G.SUCCEEDED, G.FAILED, G.CANCELLED, G.KILLED})
# action -> (states it applies to, state it enters)
GRAPH_POLICY: dict[str, tuple[frozenset[GraphState], GraphState]] = {
    "edit": (frozenset({G.DRAFT}), G.DRAFT),
    "submit": (frozenset({G.DRAFT}), G.RUNNING),
    "pause": (frozenset({G.RUNNING}), G.PAUSED),
    "resume": (frozenset({G.PAUSED}), G.RUNNING),
    "stop": (frozenset({G.RUNNING, G.PAUSED}), G.STOPPING),
    "kill": (frozenset({G.RUNNING, G.PAUSED, G.STOPPING}), G.KILLED),
    "delete": (frozenset({G.DRAFT, *GRAPH_TERMINAL}), G.KILLED),  # target unused
}


def graph_transition(current: GraphState, action: str) -> GraphState:
    """The state ``action`` leads to from ``current``; 409 when it is not allowed."""
    sources, target = GRAPH_POLICY[action]
    if current not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise IllegalTransition(
            f"cannot {action} a graph that is {current.value} (allowed when {allowed})",
            state=current.value,
            action=action,
        )
    return target


# Node states: before its run exists, and after it ended (a run state's value).
WAITING = "waiting"
STARTED = "started"  # its run exists and has not ended: the run's state tells more
SKIPPED = "skipped"  # a condition of an incoming edge can no longer be met
CANCELLED = "cancelled"  # the graph was stopped or killed before it started
# a node whose run could not be created is "failed" too (without a run)
NODE_FAILURES = frozenset({RunState.FAILED.value, RunState.SYSTEM_ERROR.value})
RUN_ENDINGS = frozenset(
    s.value
    for s in (
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.KILLED,
        RunState.SYSTEM_ERROR,
    )
)
NODE_FINAL = RUN_ENDINGS | {SKIPPED, CANCELLED}


def condition_met(condition: Condition, upstream: str) -> bool:
    """Whether an edge with ``condition`` lets its target start, given the final state of
    its source node."""
    if condition is Condition.SUCCEEDED:
        return upstream == RunState.SUCCEEDED.value
    if condition is Condition.FAILED:
        return upstream in NODE_FAILURES
    return upstream in RUN_ENDINGS


@dataclass(frozen=True, slots=True)
class Graph:
    id: str
    owner_id: str
    name: str
    state: GraphState
    created_at: datetime
    state_since: datetime
    # {"nodes": {name: {workflow, params, resources, tags}}, "edges": [{from, to,
    # condition}], "bindings": [{from: "node.output", to: "node.input"}]}
    definition: dict[str, Any] = field(default_factory=dict)
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(self.definition.get("nodes") or {})

    @property
    def edges(self) -> list[dict[str, Any]]:
        return list(self.definition.get("edges") or [])

    @property
    def bindings(self) -> list[dict[str, Any]]:
        return list(self.definition.get("bindings") or [])


@dataclass(frozen=True, slots=True)
class GraphNode:
    graph_id: str
    name: str
    state: str  # WAITING, STARTED, SKIPPED, CANCELLED or the final state of its run
    state_since: datetime
    run_id: str | None = None
    error: str | None = None


def empty_definition() -> dict[str, Any]:
    return {"nodes": {}, "edges": [], "bindings": []}


def split_port(text: str) -> tuple[str, str]:
    node, _, port = str(text).partition(".")
    return node, port


def incoming(definition: Mapping[str, Any]) -> dict[str, list[tuple[str, Condition]]]:
    """Each node's upstream nodes with the condition of the edge; a binding is an edge
    with condition ``succeeded`` unless an explicit edge joins the same nodes."""
    result: dict[str, list[tuple[str, Condition]]] = {n: [] for n in definition["nodes"]}
    seen: set[tuple[str, str]] = set()
    for edge in definition["edges"]:
        key = (edge["from"], edge["to"])
        if key not in seen and edge["to"] in result:
            seen.add(key)
            result[edge["to"]].append((edge["from"], Condition(edge["condition"])))
    for binding in definition["bindings"]:
        src, dst = split_port(binding["from"])[0], split_port(binding["to"])[0]
        if (src, dst) not in seen and dst in result:
            seen.add((src, dst))
            result[dst].append((src, Condition.SUCCEEDED))
    return result


# -- validation ------------------------------------------------------------------------------
_COMPATIBLE = {
    ("int", "float"),
    ("enum", "string"),
    ("string", "enum"),
}


def output_type(spec: WorkflowSpec, output: str) -> str:
    """The type of a workflow output, from the step output it comes from ("any" when it
    cannot be known)."""
    try:
        refs = parse_template(spec.outputs[output].source).refs()
    except (ExpressionError, KeyError):
        return "any"
    ref = next(iter(refs), None)
    if ref is None or ref.kind != "step" or ref.name not in spec.steps:
        return "any"
    step = spec.steps[ref.name]
    out = step.outputs.get(ref.output or "")
    if out is None:
        return "any"
    kind = out.kind
    if kind == "array" and out.items:
        kind = f"array of {out.items}"
    elif kind == "array" and out.glob is not None:
        kind = "array of file"
    if step.foreach is not None and kind != "any":
        kind = f"array of {kind}"
    return kind


def types_match(source: str, target: str) -> bool:
    return source == target or source == "any" or (source, target) in _COMPATIBLE


def _near(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_graph(
    definition: Mapping[str, Any], specs: Mapping[str, WorkflowSpec]
) -> list[dict[str, str]]:
    """Every problem of a graph definition: unknown nodes and ports, type mismatches of
    bindings, cycles (naming their members).  ``specs`` are the nodes' workflows."""
    problems: list[dict[str, str]] = []
    nodes = list(definition["nodes"])
    if not nodes:
        problems.append({"where": "nodes", "message": "the graph has no nodes"})

    def known(where: str, name: str) -> bool:
        if name in definition["nodes"]:
            return True
        problems.append(
            {"where": where, "message": f"{where}: unknown node {name!r}{_near(name, nodes)}"}
        )
        return False

    for i, edge in enumerate(definition["edges"]):
        where = f"edges[{i}]"
        ok = known(where, edge["from"]) & known(where, edge["to"])
        if ok and edge["from"] == edge["to"]:
            problems.append({"where": where, "message": f"{where}: a node cannot follow itself"})
    for i, binding in enumerate(definition["bindings"]):
        where = f"bindings[{i}]"
        src, out = split_port(binding["from"])
        dst, inp = split_port(binding["to"])
        if not (known(where, src) & known(where, dst)):
            continue
        label = f"{where} {src}.{out} → {dst}.{inp}"
        source_spec, target_spec = specs.get(src), specs.get(dst)
        if source_spec is None or target_spec is None:
            continue
        if out not in source_spec.outputs:
            outs = list(source_spec.outputs)
            problems.append(
                {
                    "where": where,
                    "message": f"{label}: workflow {source_spec.ref} of node {src!r} has no "
                    f"output {out!r}{_near(out, outs)}",
                }
            )
            continue
        if inp not in target_spec.inputs:
            ins = list(target_spec.inputs)
            problems.append(
                {
                    "where": where,
                    "message": f"{label}: workflow {target_spec.ref} of node {dst!r} has no "
                    f"input {inp!r}{_near(inp, ins)}",
                }
            )
            continue
        have, want = output_type(source_spec, out), target_spec.inputs[inp].type_name
        if not types_match(have, want):
            problems.append(
                {
                    "where": where,
                    "message": f"{label}: output {src}.{out} is a {have} but input "
                    f"{dst}.{inp} is a {want}",
                }
            )
    seen_targets: dict[str, int] = {}
    for i, binding in enumerate(definition["bindings"]):
        target = str(binding["to"])
        if target in seen_targets:
            problems.append(
                {
                    "where": f"bindings[{i}]",
                    "message": f"bindings[{i}]: input {target} is already bound "
                    f"(bindings[{seen_targets[target]}])",
                }
            )
        seen_targets.setdefault(target, i)
    cycle = find_cycle(definition)
    if cycle:
        problems.append(
            {
                "where": "edges",
                "message": "nodes form a cycle: " + " → ".join(cycle),
                "nodes": ", ".join(dict.fromkeys(cycle)),
            }
        )
    return problems


def find_cycle(definition: Mapping[str, Any]) -> list[str]:
    """One cycle of the graph as its node names (first repeated at the end), or []."""
    ups = incoming(definition)
    downs: dict[str, list[str]] = {n: [] for n in ups}
    for node, sources in ups.items():
        for src, _ in sources:
            if src in downs:
                downs[src].append(node)
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        stack.append(node)
        for nxt in downs[node]:
            if colour.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return []

    for node in sorted(downs):
        if node not in colour and (found := visit(node)):
            return found
    return []
