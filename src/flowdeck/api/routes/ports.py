"""/api/v1/runs/{id}/inputs and /outputs: live stream ports — push records (JSON array,
NDJSON or a WebSocket), close an input, read an output (long poll, SSE or a WebSocket)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from flowdeck.api.deps import ActorDep, CtxDep, websocket_actor
from flowdeck.api.errors import error_response, status_of
from flowdeck.api.schemas_runs import PortStateOut, PushOut, RecordOut, RecordPage
from flowdeck.domain.ports import StreamRecord
from flowdeck.domain.privilege import Actor
from flowdeck.errors import FlowdeckError, InvalidInput
from flowdeck.jsonlimits import check_depth, reject_constant
from flowdeck.services.context import Context
from flowdeck.services.ports import Page

router = APIRouter(tags=["streams"])
NDJSON = ("application/x-ndjson", "application/jsonl", "application/json-lines")
SSE = "text/event-stream"
KEEPALIVE_S = 15.0
WS_BATCH = 1000

_PUSH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {}, "minItems": 1}},
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "pattern": r"\S",
                    "description": "One JSON value (a record) a line; blank lines are skipped.",
                }
            },
        },
    }
}


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=reject_constant)


def parse_records(body: bytes, content_type: str) -> list[Any]:
    """The records of a push body: a JSON array, or NDJSON (one record per line)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not UTF-8 (at byte {exc.start})") from exc
    media = content_type.split(";", 1)[0].strip().lower()
    check_depth(body, per_line=media in NDJSON)
    if media in NDJSON:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(_loads(line))
            except ValueError as exc:
                raise InvalidInput(
                    f"line {number} is not JSON: {exc}", line=number, field="body"
                ) from exc
        return records
    try:
        value = _loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
            field="body",
        ) from exc
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}", field="body") from exc
    if not isinstance(value, list):
        raise InvalidInput(
            "the body must be a JSON array of records (or NDJSON lines with "
            "Content-Type: application/x-ndjson)",
            field="body",
        )
    return value


@router.post("/runs/{run_id}/inputs/{port}", response_model=PushOut, openapi_extra=_PUSH_BODY)
async def push_records(
    run_id: str, port: str, request: Request, ctx: CtxDep, actor: ActorDep
) -> PushOut:
    """Append records to a stream input, stored durably with their offsets before the
    answer; 429 with Retry-After when its buffer is full; 409 once it is closed."""
    records = parse_records(await request.body(), request.headers.get("content-type", ""))
    stored = await run_in_threadpool(ctx.ports.push, actor, run_id, port, records)
    first = stored.length - len(records)
    return PushOut(port=port, first=first, last=stored.length - 1, records=stored.length)


@router.post("/runs/{run_id}/inputs/{port}/close", response_model=PortStateOut)
def close_input(run_id: str, port: str, ctx: CtxDep, actor: ActorDep) -> PortStateOut:
    """End a stream input: its step reads EOF after the last record."""
    closed = ctx.ports.close(actor, run_id, port)
    return PortStateOut(port=port, records=closed.length, closed=True)


def _record(r: StreamRecord) -> dict[str, Any]:
    return {"offset": r.offset, "attempt": r.attempt, "data": r.data}


def _page(page: Page) -> RecordPage:
    return RecordPage(
        port=page.port,
        records=[RecordOut(offset=r.offset, attempt=r.attempt, data=r.data) for r in page.records],
        next=page.next,
        closed=page.closed,
    )


@router.get("/runs/{run_id}/outputs/{port}", response_model=RecordPage)
async def read_output(
    run_id: str,
    port: str,
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    start: Annotated[int, Query(alias="from", ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    wait: Annotated[float, Query(ge=0, le=300)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Any:
    """Records from offset `from`: at once if there are any, else after waiting up to
    `wait` seconds for one; `closed` once the step writing it ended.  With
    `Accept: text/event-stream`, server-sent events (id = offset; Last-Event-ID resumes)."""
    if SSE in request.headers.get("accept", ""):
        if last_event_id is not None:
            try:
                start = max(start, int(last_event_id) + 1)
            except ValueError as exc:
                raise InvalidInput(
                    "Last-Event-ID must be an offset", field="Last-Event-ID"
                ) from exc
        await run_in_threadpool(ctx.ports.check_readable, actor, run_id, port)
        return StreamingResponse(
            _events(ctx, actor, run_id, port, start, limit),
            media_type=SSE,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return _page(await ctx.ports.wait(actor, run_id, port, start, limit, wait))


async def _follow(
    ctx: Context, actor: Actor, run_id: str, port: str, start: int, limit: int
) -> AsyncIterator[Page]:
    """Pages of a stream output as they come, until it is closed and read to its end; an
    empty page now and then (to keep the connection alive)."""
    while True:
        page = await ctx.ports.wait(actor, run_id, port, start, limit, KEEPALIVE_S)
        yield page
        start = page.next
        if page.closed and not page.records:
            return


async def _events(
    ctx: Context, actor: Actor, run_id: str, port: str, start: int, limit: int
) -> AsyncIterator[bytes]:
    async for page in _follow(ctx, actor, run_id, port, start, limit):
        chunks = [
            f"id: {r.offset}\nevent: record\ndata: {json.dumps(_record(r))}\n\n"
            for r in page.records
        ]
        if page.closed and not page.records:
            chunks.append(f"event: closed\ndata: {json.dumps({'next': page.next})}\n\n")
        elif not page.records:
            chunks.append(": keep-alive\n\n")
        yield "".join(chunks).encode()


# -- WebSockets ---------------------------------------------------------------------------


async def _deny(websocket: WebSocket, exc: FlowdeckError) -> None:
    """Refuse the handshake with the usual JSON error (HTTP status) when the server can,
    else close with a policy violation."""
    response = error_response(status_of(exc), exc.code, exc.message, exc.details)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1008, reason=exc.message[:120])


async def _open(websocket: WebSocket, check: Any, run_id: str, port: str) -> Actor | None:
    ctx: Context = websocket.app.state.ctx
    try:
        actor = await websocket_actor(websocket, ctx)
        await run_in_threadpool(check, actor, run_id, port)
    except FlowdeckError as exc:
        await _deny(websocket, exc)
        return None
    await websocket.accept()
    return actor


def _ws_error(exc: FlowdeckError) -> dict[str, Any]:
    details = dict(exc.details)
    return {"error": {"code": exc.code, "message": exc.message, "details": details}}


@router.websocket("/runs/{run_id}/inputs/{port}")
async def push_socket(websocket: WebSocket, run_id: str, port: str) -> None:
    """Each text message is one JSON record, or a JSON array of records; each is answered
    with `{first, last, records}` once stored, or `{error}` (the socket stays open)."""
    ctx: Context = websocket.app.state.ctx
    actor = await _open(websocket, ctx.ports.check_writable, run_id, port)
    if actor is None:
        return
    try:
        while True:
            text = await websocket.receive_text()
            try:
                check_depth(text, where="message")
                try:
                    value = _loads(text)
                except ValueError as exc:
                    raise InvalidInput(f"the message is not JSON: {exc}") from exc
                records = value if isinstance(value, list) else [value]
                stored = await run_in_threadpool(ctx.ports.push, actor, run_id, port, records)
            except FlowdeckError as exc:
                await websocket.send_json(_ws_error(exc))
                continue
            first = stored.length - len(records)
            await websocket.send_json(
                {"first": first, "last": stored.length - 1, "records": stored.length}
            )
    except WebSocketDisconnect:
        return


@router.websocket("/runs/{run_id}/outputs/{port}")
async def read_socket(
    websocket: WebSocket,
    run_id: str,
    port: str,
    start: Annotated[int, Query(alias="from", ge=0, le=2**62)] = 0,
) -> None:
    """Each record as a text message `{offset, attempt, data}` from offset `from`, live;
    then `{closed: true, next}` and a normal close once the stream ended."""
    ctx: Context = websocket.app.state.ctx
    actor = await _open(websocket, ctx.ports.check_readable, run_id, port)
    if actor is None:
        return
    closing = asyncio.ensure_future(_until_closed(websocket))
    try:
        async for page in _follow(ctx, actor, run_id, port, start, WS_BATCH):
            if closing.done():
                return
            for r in page.records:
                await websocket.send_text(json.dumps(_record(r)))
            if page.closed and not page.records:
                await websocket.send_json({"closed": True, "next": page.next})
                await websocket.close(code=1000)
                return
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        closing.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and drop) what the client sends, until it goes."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return
