"""ASGI middleware for observability: a request id on every request (``X-Request-ID`` from
the client when it is a sane token, else a new one; echoed in the response and carried by
log lines), the run id of ``/runs/{id}`` paths for log lines, and HTTP latency by route
template for ``GET /metrics``."""

from __future__ import annotations

import functools
import itertools
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdeck.logs import REQUEST_ID, RUN_ID
from flowdeck.services.metrics import Metrics

HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
_RUN_IN_PATH = re.compile(r"/runs/(run_[0-9a-z]{26})(?:/|$)")
UNMATCHED = "<unmatched>"


# New request ids: this process's random prefix and a counter — unique, and no call to the
# system's random source per request (a request id names a request in logs; it is no secret).
_PREFIX = uuid.uuid4().hex[:16]
_COUNTER = itertools.count(1)


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER and _SANE_ID.fullmatch(value):
            return str(value.decode())
    return f"{_PREFIX}{next(_COUNTER):016x}"


@functools.lru_cache(maxsize=256)
def _param(name: str) -> re.Pattern[str]:
    return re.compile(r"\{" + re.escape(name) + r"(:[^}]*)?\}")


class _Literal:
    """A replacement taken as is (no backslash escapes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, _match: re.Match[str]) -> str:
        return self.text


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/api/v1/runs/{run_id}``), never the raw
    path: labels must not grow with every id.  A route of an included router knows its
    path below the router's prefix only; the prefix is what precedes it in the request."""
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return UNMATCHED
    filled = template
    for name, value in (scope.get("path_params") or {}).items():
        filled = _param(name).sub(_Literal(str(value)), filled)
    path: str = scope["path"]
    return path[: -len(filled)] + template if path.endswith(filled) else template


class Observability:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        found = _RUN_IN_PATH.search(scope["path"])
        rid_token = REQUEST_ID.set(rid)
        run_token = RUN_ID.set(found.group(1) if found else None)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (HEADER, rid.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(rid_token)
            RUN_ID.reset(run_token)
            if scope["type"] == "http":
                self.metrics.observe_http(
                    scope["method"], route_template(scope), status, time.perf_counter() - started
                )
