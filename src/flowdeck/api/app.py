"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from flowdeck import __version__
from flowdeck.api import errors
from flowdeck.api.middleware import BodyLimit, JsonDepth, SecurityHeaders
from flowdeck.api.observability import Observability
from flowdeck.api.routes import (
    admin,
    auth,
    events,
    graphs,
    health,
    metrics,
    ports,
    reruns,
    runs,
    secrets,
    webhooks,
    wes,
    workflows,
)
from flowdeck.api.schemas import ErrorOut
from flowdeck.config import Settings
from flowdeck.logs import install_redaction
from flowdeck.services.context import Context, build_context
from flowdeck.web import install as install_web

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings,
    context: Context | None = None,
    *,
    run_scheduler: bool = True,
    close_on_shutdown: bool = False,
) -> FastAPI:
    """The flowdeck server for ``settings`` (or around an already built ``context``);
    ``run_scheduler=False`` builds the app without starting runs (to read its schema);
    ``close_on_shutdown``: the lifespan's end closes the context (commits in flight,
    drains with ``drain``) — before uvicorn re-raises the signal that stopped it."""
    install_redaction()  # no credential reaches a log line, whatever logging's set-up
    ctx = context or build_context(settings)
    ctx.accounts.bootstrap_admin()
    if run_scheduler:
        ctx.start_scheduler()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Fewer threads for blocking work than AnyIO's 40: on a few cores, many threads
        # only queue for the GIL and the database's write lock.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.http_threads
        yield
        if close_on_shutdown:
            await anyio.to_thread.run_sync(ctx.close)

    app = FastAPI(
        lifespan=lifespan,
        title="flowdeck",
        version=__version__,
        description="A workflow job manager: accounts, workflows, runs and their events.",
        responses={"default": {"model": ErrorOut, "description": "Error"}},
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    # FastAPI tries routes in order until one matches: the busiest (run submission and
    # status, then WES's) first.  No path of the routers they go before overlaps with one
    # of theirs.
    app.include_router(runs.router, prefix=API_PREFIX)
    app.include_router(wes.router)
    app.include_router(auth.router, prefix=API_PREFIX)
    app.include_router(admin.router, prefix=API_PREFIX)
    app.include_router(workflows.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(secrets.router, prefix=API_PREFIX)
    app.include_router(ports.router, prefix=API_PREFIX)
    app.include_router(graphs.router, prefix=API_PREFIX)
    app.include_router(reruns.router, prefix=API_PREFIX)
    install_web(app)
    app.add_middleware(JsonDepth)  # inside BodyLimit: it reads bodies that are in bounds
    app.add_middleware(SecurityHeaders, hsts=settings.tls)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_request_bytes,
        overrides=[
            ("POST", f"{API_PREFIX}/workflows(/validate)?", settings.max_archive_bytes),
            ("PUT", f"{API_PREFIX}/runs/[^/]+/files/[^/]+", settings.max_upload_bytes),
            ("POST", f"{wes.WES_PREFIX}/runs", settings.max_archive_bytes),
        ],
    )
    app.add_middleware(Observability, metrics=ctx.metrics)  # outermost: times everything
    return app
