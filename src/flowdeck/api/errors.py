"""Errors to HTTP, in one place: every error body is ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from flowdeck import errors as e

log = logging.getLogger("flowdeck.api")

STATUS: dict[type[e.FlowdeckError], int] = {
    e.InvalidInput: 422,
    e.NotFound: 404,
    e.Conflict: 409,
    e.AuthenticationRequired: 401,
    e.PermissionDenied: 403,
    e.Throttled: 429,
    e.PayloadTooLarge: 413,
    e.RangeNotSatisfiable: 416,
    e.StoreUnavailable: 503,
    e.ConfigError: 500,
    e.FlowdeckError: 400,
}


def status_of(exc: e.FlowdeckError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


WES_PREFIX = "/ga4gh/wes/"


def _wes_error(status: int, message: str, headers: dict[str, str] | None) -> JSONResponse:
    """GA4GH WES routes answer errors as its ErrorResponse: ``{msg, status_code}``."""
    return JSONResponse({"msg": message, "status_code": status}, status, headers=headers)


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if request.url.path.startswith(WES_PREFIX):
        # WES answers bad requests with 400 (flowdeck's own API: 422).
        return _wes_error(400 if status == 422 else status, message, headers)
    return error_response(status, code, message, details, headers)


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.FlowdeckError)
    return domain_response(request, exc)


def domain_response(request: Request, exc: e.FlowdeckError) -> JSONResponse:
    """The answer to a domain error (also for middleware, outside the exception handlers)."""
    headers: dict[str, str] = {}
    if isinstance(exc, e.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, e.AuthenticationRequired):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, e.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    return _respond(request, status_of(exc), exc.code, exc.message, exc.details, headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": _location(err.get("loc", ())), "msg": str(err.get("msg")), "type": err.get("type")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems[:5])
    return _respond(
        request, 422, "invalid_request", f"invalid request: {summary}", {"errors": problems}
    )


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method a route of the app takes at this path.  The router answers 405 with
    the methods of the first route whose path matches, and a path often has several
    routes (``GET /runs`` and ``POST /runs``).  Each method is asked of the routes (not
    read from them: included routers keep theirs inside); mounts (static files) take
    every method to their app, which answers for itself."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return [
        method
        for method in METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    return _respond(
        request,
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message,
        headers=headers,
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.FlowdeckError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, _unexpected)
