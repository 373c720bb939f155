"""The web dashboard served at ``/``: Jinja2 pages plus a little plain JavaScript."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from flowdeck.web.pages import router
from flowdeck.web.pages_areas import router as areas_router
from flowdeck.web.pages_more import page_or_json_404
from flowdeck.web.pages_more import router as more_router
from flowdeck.web.pages_runs import router as runs_router

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the pages and their static files to ``app``."""
    app.include_router(router)
    app.include_router(runs_router)
    app.include_router(more_router)
    app.include_router(areas_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(StarletteHTTPException, page_or_json_404)
