"""The dashboard's webhooks, secrets and run-graph pages (server-rendered; live updates and every
change through the HTTP API from ``static/areas.js``)."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from flowdeck.api.deps import CtxDep
from flowdeck.api.files_view import shown_graph
from flowdeck.api.schemas_graphs import GraphOut, GraphSummary
from flowdeck.api.schemas_secrets import SecretOut
from flowdeck.api.schemas_webhooks import WebhookOut
from flowdeck.errors import NotFound
from flowdeck.web.dag import Layout, layout
from flowdeck.web.pages import _not_found, _principal, _render, _to_login

router = APIRouter(include_in_schema=False)

GRAPH_EXAMPLE = (
    '{"name": "pair",\n "nodes": {"first": {"workflow": "name@version"},\n'
    '           "second": {"workflow": "name@version"}},\n'
    ' "edges": [{"from": "first", "to": "second"}]}'
)


def graph_layout(graph: dict[str, Any]) -> Layout:
    """Nodes in columns by depth: a node sits right of every node it waits for (its
    edges' and bindings' upstream nodes).  A draft with a cycle is drawn without edges."""
    names = [n["name"] for n in graph["nodes"]]
    deps: dict[str, set[str]] = {name: set() for name in names}
    links = [(e["from"], e["to"]) for e in graph["edges"]]
    links += [(b["from"].split(".")[0], b["to"].split(".")[0]) for b in graph["bindings"]]
    for source, target in links:
        if source in deps and target in deps:
            deps[target].add(source)
    try:
        order = tuple(TopologicalSorter(deps).static_order())
    except CycleError:
        deps = {name: set() for name in names}
        order = tuple(names)
    return layout({k: frozenset(v) for k, v in deps.items()}, order)


@router.get("/webhooks")
def webhooks_page(request: Request, ctx: CtxDep) -> Response:
    """Your webhook subscriptions: add (the secret shown once), enable or disable,
    delete, deliveries with their attempts, redeliver."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    subs = ctx.webhooks.subscriptions(principal.actor, before=None, limit=200)
    hooks = [WebhookOut.of(s).model_dump(mode="json") for s in subs]
    return _render(request, "webhooks.html", principal, hooks=hooks)


@router.get("/secrets")
def secrets_page(request: Request, ctx: CtxDep) -> Response:
    """Your secrets: names and dates (never values), set one through a form, delete."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    items = [SecretOut.of(i).model_dump(mode="json") for i in ctx.secrets.list(principal.actor)]
    return _render(request, "secrets.html", principal, secrets=items)


@router.get("/graphs")
def graphs_page(request: Request, ctx: CtxDep) -> Response:
    """Your run graphs, and a form to submit one."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    items = ctx.graphs.list_graphs(principal.actor, limit=200)
    graphs = [GraphSummary.of(g).model_dump(mode="json") for g in items]
    return _render(request, "graphs.html", principal, graphs=graphs, example=GRAPH_EXAMPLE)


@router.get("/graphs/{graph_id}")
def graph_page(request: Request, graph_id: str, ctx: CtxDep) -> Response:
    """One graph: its nodes drawn as SVG with live states, controls and events."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    try:
        view = ctx.graphs.get(principal.actor, graph_id)
    except NotFound:
        return _not_found(request, principal, f"no graph {graph_id}")
    graph = shown_graph(ctx, GraphOut.of_view(view)).model_dump(mode="json")
    return _render(request, "graph.html", principal, graph=graph, drawing=graph_layout(graph))
