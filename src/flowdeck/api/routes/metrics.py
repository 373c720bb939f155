"""Prometheus metrics: ``GET /metrics`` for admins, or for the configured ``metrics_token``."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from flowdeck.api.deps import CtxDep, current_principal
from flowdeck.errors import NotFound
from flowdeck.services.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


def _is_metrics_token(request: Request, expected: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), expected.encode()
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, ctx: CtxDep) -> Response:
    """Prometheus metrics of this server: for admins, or with ``metrics_token`` as bearer
    token (401 without credentials, 404 for other users)."""
    token = ctx.settings.metrics_token
    by_token = token is not None and _is_metrics_token(request, token.get_secret_value())
    if not by_token and not (await current_principal(request, ctx)).actor.is_admin:
        raise NotFound("no such route")
    body = await run_in_threadpool(ctx.metrics.render)  # it counts runs in the store
    return Response(body, media_type=CONTENT_TYPE)
