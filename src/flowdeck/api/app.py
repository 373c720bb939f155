"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from flowdeck import __version__
from flowdeck.api import errors
from flowdeck.api.middleware import BodyLimit, SecurityHeaders
from flowdeck.api.routes import admin, auth, health, workflows
from flowdeck.api.schemas import ErrorOut
from flowdeck.config import Settings
from flowdeck.services.context import Context, build_context

API_PREFIX = "/api/v1"


def create_app(settings: Settings, context: Context | None = None) -> FastAPI:
    """The flowdeck server for ``settings`` (or around an already built ``context``)."""
    ctx = context or build_context(settings)
    ctx.accounts.bootstrap_admin()
    app = FastAPI(
        title="flowdeck",
        version=__version__,
        description="A workflow job manager: accounts, workflows, runs and their events.",
        responses={"default": {"model": ErrorOut, "description": "Error"}},
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(health.router)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(admin.router, prefix=API_PREFIX)
    app.include_router(workflows.router, prefix=API_PREFIX)
    app.add_middleware(SecurityHeaders, hsts=settings.tls)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_request_bytes,
        overrides={
            f"{API_PREFIX}/workflows": max(settings.max_archive_bytes, settings.max_request_bytes)
        },
    )
    return app
