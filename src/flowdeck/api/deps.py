"""Request dependencies: the server context, the caller's address and identity.

Dependencies are ``async`` so that FastAPI does not send them to its thread pool:
:func:`current_principal` answers from the token cache when it can and reads the store in a
worker thread only when it must.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from flowdeck.domain.privilege import Actor
from flowdeck.errors import AuthenticationRequired, CsrfFailed, InvalidInput, PermissionDenied
from flowdeck.services.accounts import Principal
from flowdeck.services.context import Context

SESSION_COOKIE = "flowdeck_session"
CSRF_COOKIE = "flowdeck_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
URL_TOKEN_PARAMS = ("access_token", "token", "api_key")
WES_PREFIX = "/ga4gh/wes/"  # GA4GH WES clients may send the token as a Basic password


async def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _credentials(request: HTTPConnection) -> tuple[str, bool] | None:
    """The presented token and whether it came from the session cookie."""
    for name in URL_TOKEN_PARAMS:
        if name in request.query_params:
            raise InvalidInput(
                f"tokens are not accepted in URLs (query parameter {name!r}); "
                "send 'Authorization: Bearer <token>'",
                field=name,
            )
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic" and request.url.path.startswith(WES_PREFIX):
            return _basic_token(value), False
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationRequired("the Authorization header must be 'Bearer <token>'")
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, True
    return None


def _basic_token(value: str) -> str:
    """WES clients that only know HTTP Basic (wes-client through ~/.netrc) send the token
    as the password; the user name is not used."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthenticationRequired("the Basic credentials are not valid base64") from exc
    token = decoded.partition(":")[2]
    if not token:
        raise AuthenticationRequired("send the token as the password of Basic credentials")
    return token


def _check_csrf(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfFailed()


async def current_principal(
    request: Request, ctx: Annotated[Context, Depends(get_ctx)]
) -> Principal:
    return await _principal(request, ctx)


async def _principal(request: Request, ctx: Context) -> Principal:
    found = _credentials(request)
    if found is None:
        raise AuthenticationRequired()
    secret, from_cookie = found
    principal = ctx.accounts.cached_principal(secret)
    if principal is None:
        principal = await run_in_threadpool(ctx.accounts.authenticate, secret)
    if from_cookie:
        _check_csrf(request)
    return principal


# The caller as an actor in one dependency, not one on top of current_principal: FastAPI
# solves each level of dependencies anew at every request.
async def current_actor(request: Request, ctx: Annotated[Context, Depends(get_ctx)]) -> Actor:
    return (await _principal(request, ctx)).actor


async def admin_actor(request: Request, ctx: Annotated[Context, Depends(get_ctx)]) -> Actor:
    actor = (await _principal(request, ctx)).actor
    if not actor.is_admin:
        raise PermissionDenied("this needs the admin role")
    return actor


def _check_origin(websocket: WebSocket) -> None:
    """A browser sends the session cookie with any page's WebSocket: accept the cookie only
    from pages of this server (the WebSocket counterpart of the CSRF check)."""
    origin = websocket.headers.get("origin", "")
    host = websocket.headers.get("host", "")
    _scheme, _, origin_host = origin.partition("://")
    if not origin or not host or origin_host.rstrip("/").lower() != host.lower():
        raise CsrfFailed(
            "a WebSocket authenticated by the session cookie must come from a page of this "
            "server (its Origin must match the Host)"
        )


async def websocket_actor(websocket: WebSocket, ctx: Context) -> Actor:
    """The caller of a WebSocket: a bearer token in the Authorization header, or the
    session cookie with a matching Origin.  Never a token in the URL."""
    found = _credentials(websocket)
    if found is None:
        raise AuthenticationRequired()
    secret, from_cookie = found
    if from_cookie:
        _check_origin(websocket)
    principal: Principal = await run_in_threadpool(ctx.accounts.authenticate, secret)
    return principal.actor


P = ParamSpec("P")
T = TypeVar("T")


async def hot_read(ctx: Context, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, a short read of a hot route: on the event loop where the
    store's reads are local (SQLite: cheaper than the hop to a worker thread and back),
    else in the thread pool (a PostgreSQL round trip must not hold the loop)."""
    if ctx.store.inline_reads:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)


CtxDep = Annotated[Context, Depends(get_ctx)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
ActorDep = Annotated[Actor, Depends(current_actor)]
AdminDep = Annotated[Actor, Depends(admin_actor)]
AddressDep = Annotated[str | None, Depends(client_address)]
