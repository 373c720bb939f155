"""Logging set-up: text lines, or JSON objects (``log_format = "json"``) that carry the id of
the HTTP request being served and of the run it is about.

The ids live in context variables set by :class:`flowdeck.api.observability.Observability`
for each request (and copied into the threads that serve it); a log call may also pass
``extra={"run_id": ...}``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("flowdeck_request_id", default=None)
RUN_ID: ContextVar[str | None] = ContextVar("flowdeck_run_id", default=None)

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(run_id)s"


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``run_id`` to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "run_id", None) is None:
            record.run_id = RUN_ID.get()
        return True


def log_config(level: str, fmt: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for flowdeck and uvicorn (``fmt``: text or json)."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
    else:
        formatter = {"format": "%(levelname)s %(name)s %(message)s"}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    quiet = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"main": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {"uvicorn": quiet, "uvicorn.error": quiet, "uvicorn.access": quiet},
    }
