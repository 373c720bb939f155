"""ASGI middleware: request body size limit, JSON nesting limit and security headers."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdeck.api.errors import domain_response
from flowdeck.errors import JsonTooDeep
from flowdeck.jsonlimits import check_depth

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines"})


class _TooLarge(HTTPException):
    """Raised from ``receive``: the app's HTTP error handler answers 413 in the usual shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"request body larger than {limit} bytes",
                "details": {"limit_bytes": limit},
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced by Content-Length
    or discovered while streaming.  Routes that stream uploads to disk have their own limit:
    ``overrides`` maps (method, path regex) to a limit."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        overrides: list[tuple[str, str, int]] | None = None,
    ):
        self.app = app
        self.limit = limit
        self.overrides = [(m, re.compile(p), n) for m, p, n in overrides or []]

    def _limit_for(self, method: str, path: str) -> int:
        for want, pattern, limit in self.overrides:
            if want == method and pattern.fullmatch(path):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await _reject(send, limit)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send, limit)


def _json_media(scope: Scope) -> str | None:
    """``json`` or ``ndjson`` for a request body in one of those formats, else None."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.decode("latin-1").split(";", 1)[0].strip().lower()
            if media in NDJSON_TYPES:
                return "ndjson"
            if media == "application/json" or (
                media.startswith("application/") and media.endswith("+json")
            ):
                return "json"
    return None


class JsonDepth:
    """Refuse a JSON or NDJSON request body nested deeper than the limit of
    :mod:`flowdeck.jsonlimits`, before any route parses it, with the usual JSON error (422
    ``json_too_deep`` saying where).  Such bodies are read whole here (each route reads
    them whole anyway), within the limit :class:`BodyLimit` (outside this one) sets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        media = _json_media(scope) if scope["type"] == "http" else None
        if media is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        try:
            check_depth(body, per_line=media == "ndjson")
        except JsonTooDeep as exc:
            await domain_response(Request(scope), exc)(scope, receive, send)
            return
        given = False

        async def replay() -> Message:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        extra: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if hsts:
            extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self.extra = extra

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.extend(self.extra)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
