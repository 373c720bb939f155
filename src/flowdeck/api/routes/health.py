"""Liveness and readiness probes (public)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from flowdeck import __version__
from flowdeck.api.deps import CtxDep
from flowdeck.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: `{ready: false, reason}`"}},
)
def readyz(ctx: CtxDep) -> Any:
    """The database answers, its schema is current and writes succeed; else 503
    ``{ready: false, reason}`` (a full disk, the database gone: a load balancer stops
    sending requests here, while reads may still answer)."""
    try:
        ctx.store.ping()
    except StoreUnavailable as exc:
        return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
    failure = ctx.store.write_failure
    if failure is not None:
        reason = f"writes fail: {failure}"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)
    return {"status": "ready", "ready": True}
