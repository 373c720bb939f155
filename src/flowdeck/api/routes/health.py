"""Liveness and readiness probes (public)."""

from __future__ import annotations

from fastapi import APIRouter

from flowdeck import __version__
from flowdeck.api.deps import CtxDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(ctx: CtxDep) -> dict[str, str]:
    """The database answers and its schema is current (503 otherwise)."""
    ctx.store.ping()
    return {"status": "ready"}
