"""/api/v1/graphs: run graphs — build a draft in several calls, validate, submit, watch,
pause/resume/stop/kill the whole graph, its events (list or SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from flowdeck.api.deps import ActorDep, CtxDep
from flowdeck.api.files_view import shown_graph
from flowdeck.api.params import check_cursor, cursor_query
from flowdeck.api.routes.events import (
    _STREAM_DOC,
    After,
    LastEventId,
    Limit,
    Types,
    list_or_stream,
)
from flowdeck.api.schemas_graphs import (
    BINDING_PATTERN,
    BindingIn,
    EdgeIn,
    GraphCreate,
    GraphOut,
    GraphPage,
    GraphStopIn,
    GraphSummary,
    NodeIn,
    ProblemsOut,
)
from flowdeck.api.schemas_runs import EventOut
from flowdeck.domain.graphs import GraphState
from flowdeck.domain.privilege import Actor
from flowdeck.domain.spec import STEP_PATTERN
from flowdeck.services.context import Context

router = APIRouter(tags=["graphs"])
NodeName = Annotated[str, Path(pattern=STEP_PATTERN)]


def _out(ctx: Context, actor: Actor, graph_id: str) -> GraphOut:
    return shown_graph(ctx, GraphOut.of_view(ctx.graphs.get(actor, graph_id)))


@router.post("/graphs", status_code=201, response_model=GraphOut)
def create_graph(body: GraphCreate, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """A new draft graph with the nodes, edges and bindings given (more can be added);
    `submit: true` validates and starts it at once — refused as a whole if invalid."""
    graph = ctx.graphs.create(
        actor,
        body.name,
        {k: v.as_dict() for k, v in (body.nodes or {}).items()},
        [e.as_dict() for e in body.edges or []],
        [b.as_dict() for b in body.bindings or []],
        body.submit,
    )
    return _out(ctx, actor, graph.id)


@router.get("/graphs", response_model=GraphPage)
def list_graphs(
    ctx: CtxDep,
    actor: ActorDep,
    state: Annotated[list[GraphState] | None, Query()] = None,
    cursor: Annotated[
        str | None, cursor_query("graph", "Cursor: next_cursor of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> GraphPage:
    """Your graphs (admins: all), newest first."""
    check_cursor(cursor, "graph", "cursor")
    items = ctx.graphs.list_graphs(actor, states=state, after_id=cursor, limit=limit)
    nxt = items[-1].id if len(items) == limit else None
    return GraphPage(items=[GraphSummary.of(g) for g in items], next_cursor=nxt)


@router.get("/graphs/{graph_id}", response_model=GraphOut)
def get_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """State, nodes counted by state, each node's run and state, edges and bindings."""
    return _out(ctx, actor, graph_id)


@router.put("/graphs/{graph_id}/nodes/{node}", response_model=GraphOut)
def put_node(graph_id: str, node: NodeName, body: NodeIn, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """Add or replace a node of a draft."""
    ctx.graphs.put_node(actor, graph_id, node, body.as_dict())
    return _out(ctx, actor, graph_id)


@router.delete("/graphs/{graph_id}/nodes/{node}", response_model=GraphOut)
def delete_node(graph_id: str, node: NodeName, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """Remove a node of a draft, with its edges and bindings."""
    ctx.graphs.delete_node(actor, graph_id, node)
    return _out(ctx, actor, graph_id)


@router.post("/graphs/{graph_id}/edges", response_model=GraphOut)
def add_edge(graph_id: str, body: EdgeIn, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """`{from, to, condition}`: `to` starts after `from` succeeded, completed or failed."""
    ctx.graphs.add_edge(actor, graph_id, body.as_dict())
    return _out(ctx, actor, graph_id)


@router.delete("/graphs/{graph_id}/edges", response_model=GraphOut)
def delete_edge(
    graph_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    source: Annotated[str, Query(alias="from", pattern=STEP_PATTERN)],
    target: Annotated[str, Query(alias="to", pattern=STEP_PATTERN)],
) -> GraphOut:
    ctx.graphs.delete_edge(actor, graph_id, source, target)
    return _out(ctx, actor, graph_id)


@router.post("/graphs/{graph_id}/bindings", response_model=GraphOut)
def add_binding(graph_id: str, body: BindingIn, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """`{from: "node.output", to: "node.input"}` (implies a `succeeded` edge)."""
    ctx.graphs.add_binding(actor, graph_id, body.as_dict())
    return _out(ctx, actor, graph_id)


@router.delete("/graphs/{graph_id}/bindings", response_model=GraphOut)
def delete_binding(
    graph_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    target: Annotated[str, Query(alias="to", pattern=BINDING_PATTERN)],
) -> GraphOut:
    ctx.graphs.delete_binding(actor, graph_id, target)
    return _out(ctx, actor, graph_id)


@router.post("/graphs/{graph_id}/validate", response_model=ProblemsOut)
def validate_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> ProblemsOut:
    """Dry run of submit: unknown nodes and ports, cycles, binding types, inputs."""
    problems = ctx.graphs.validate(actor, graph_id)
    return ProblemsOut(ok=not problems, problems=problems)


@router.post("/graphs/{graph_id}/submit", response_model=GraphOut)
def submit_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """Validate the draft and start it: nodes whose dependencies are met start at once."""
    ctx.graphs.submit(actor, graph_id)
    return _out(ctx, actor, graph_id)


@router.post("/graphs/{graph_id}/pause", response_model=GraphOut)
def pause_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """Freeze its running runs; no node starts until it is resumed."""
    return shown_graph(
        ctx, GraphOut.of_view(ctx.graphs.control(actor, graph_id, "pause", mode="freeze"))
    )


@router.post("/graphs/{graph_id}/resume", response_model=GraphOut)
def resume_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    return shown_graph(ctx, GraphOut.of_view(ctx.graphs.control(actor, graph_id, "resume")))


@router.post("/graphs/{graph_id}/stop", response_model=GraphOut)
def stop_graph(
    graph_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    body: Annotated[GraphStopIn | None, Body()] = None,
) -> GraphOut:
    """Stop its runs gracefully; waiting nodes are cancelled."""
    grace = body.grace_s if body and body.grace_s is not None else ctx.settings.stop_grace_s
    return shown_graph(
        ctx, GraphOut.of_view(ctx.graphs.control(actor, graph_id, "stop", grace_s=grace))
    )


@router.post("/graphs/{graph_id}/kill", response_model=GraphOut)
def kill_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> GraphOut:
    """Kill its runs now; waiting nodes are cancelled."""
    return shown_graph(ctx, GraphOut.of_view(ctx.graphs.control(actor, graph_id, "kill")))


@router.delete("/graphs/{graph_id}", status_code=204)
def delete_graph(graph_id: str, ctx: CtxDep, actor: ActorDep) -> Response:
    """A draft or an ended graph (its runs stay)."""
    ctx.graphs.delete(actor, graph_id)
    return Response(status_code=204)


@router.get("/graphs/{graph_id}/events", response_model=list[EventOut], responses=_STREAM_DOC)
async def graph_events(
    graph_id: str,
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    type: Types = None,
    after: After = None,
    limit: Limit = 100,
    last_event_id: LastEventId = None,
) -> Any:
    """The graph's own events (graph.*, node.*), oldest first; a stream with
    `Accept: text/event-stream`."""
    return await list_or_stream(
        request,
        ctx,
        actor,
        types=type,
        after=after,
        limit=limit,
        last_event_id=last_event_id,
        run_id=graph_id,
        kind="graph",
    )
