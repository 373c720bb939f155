"""/api/v1/events and /api/v1/runs/{id}/events: lists, or Server-Sent Event streams when
the client asks for ``text/event-stream``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from flowdeck.api.deps import ActorDep, CtxDep
from flowdeck.api.params import EVENT_TYPE_ITEM
from flowdeck.api.schemas_runs import EventOut
from flowdeck.domain.events import MAX_PATTERNS
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Event
from flowdeck.errors import InvalidInput
from flowdeck.events.bus import BusClosed, SlowSubscriber
from flowdeck.services.context import Context

router = APIRouter(tags=["events"])

STREAM = "text/event-stream"
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            STREAM: {
                "schema": {"type": "string"},
                "example": 'id: 42\ndata: {"id": 42, "run_id": "run_…", "type": "run.running"}\n',
            }
        },
        "description": "Events, oldest first; with `Accept: text/event-stream`, a live "
        "stream (`id:` is the event id, `Last-Event-ID` resumes).",
    }
}
Types = Annotated[
    list[str] | None,
    Query(
        description="Event type patterns (`*` matches any characters): `run.*`, `step.failed`.",
        # in the document; the service checks them and names the one that is wrong
        json_schema_extra={"maxItems": MAX_PATTERNS, "items": EVENT_TYPE_ITEM},
    ),
]
After = Annotated[int | None, Query(ge=0, le=2**62, description="Only events with a greater id.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
LastEventId = Annotated[str | None, Header(alias="last-event-id")]


def _wants_stream(request: Request) -> bool:
    return STREAM in request.headers.get("accept", "")


def _resume_from(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None:
        return after
    try:
        value = int(last_event_id)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**62:
        raise InvalidInput("Last-Event-ID must be an event id (an integer)", field="Last-Event-ID")
    return value


def _sse(request: Request, events: AsyncIterator[Event]) -> EventSourceResponse:
    settings = request.app.state.ctx.settings

    async def frames() -> AsyncIterator[ServerSentEvent]:
        try:
            async for e in events:
                yield ServerSentEvent(data=EventOut.of(e).model_dump_json(), id=str(e.id))
        except (SlowSubscriber, BusClosed) as exc:
            yield ServerSentEvent(comment=exc.message)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return EventSourceResponse(
        frames(),
        ping=settings.sse_keepalive_s,
        send_timeout=settings.sse_send_timeout_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def list_or_stream(
    request: Request,
    ctx: Context,
    actor: Actor,
    *,
    types: list[str] | None,
    after: int | None,
    limit: int,
    last_event_id: str | None,
    **where: Any,
) -> Any:
    """The events ``where`` says (a run, runs, a graph) as a list, or as a live stream when
    the client asks for ``text/event-stream``."""
    if _wants_stream(request):
        stream = await ctx.events.prepare_stream(
            actor, types=types, after=_resume_from(last_event_id, after), **where
        )
        return _sse(request, stream)
    found = await run_in_threadpool(
        lambda: ctx.events.find(actor, types=types, after=after, limit=limit, **where)
    )
    return [EventOut.of(e) for e in found]


@router.get("/events", response_model=list[EventOut], responses=_STREAM_DOC)
async def list_events(
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    run: Annotated[list[str] | None, Query(description="Only these runs.")] = None,
    type: Types = None,
    after: After = None,
    limit: Limit = 100,
    last_event_id: LastEventId = None,
) -> Any:
    """Events of your runs (admins: of all runs), oldest first; page with `after` = the
    last id you have.  As a stream it starts from now unless `after` or `Last-Event-ID`
    says where to resume."""
    return await list_or_stream(
        request,
        ctx,
        actor,
        types=type,
        after=after,
        limit=limit,
        last_event_id=last_event_id,
        runs=run,
    )


@router.get("/runs/{run_id}/events", response_model=list[EventOut], responses=_STREAM_DOC)
async def run_events(
    run_id: str,
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    type: Types = None,
    after: After = None,
    limit: Limit = 100,
    last_event_id: LastEventId = None,
) -> Any:
    """The run's events, oldest first.  As a stream: its history from the first event (or
    after `after` / `Last-Event-ID`), then live events until you disconnect."""
    return await list_or_stream(
        request,
        ctx,
        actor,
        types=type,
        after=after,
        limit=limit,
        last_event_id=last_event_id,
        run_id=run_id,
    )
