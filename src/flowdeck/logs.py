"""Logging set-up: text lines, or JSON objects (``log_format = "json"``) that carry the id of
the HTTP request being served and of the run it is about.

The ids live in context variables set by :class:`flowdeck.api.observability.Observability`
for each request (and copied into the threads that serve it); a log call may also pass
``extra={"run_id": ...}``.

Credentials never reach a log line: :func:`install_redaction` makes every record of the
process (flowdeck's, uvicorn's access and error lines, libraries') carry ``[REDACTED]``
instead of tokens in query strings (``?access_token=``, ``?token=``, ``?password=``, …),
``Authorization`` values, flowdeck tokens and webhook secrets, and passwords in URLs —
whatever the handlers and formats (text or JSON) configured.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("flowdeck_request_id", default=None)
RUN_ID: ContextVar[str | None] = ContextVar("flowdeck_run_id", default=None)

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(run_id)s"

REDACTED = "[REDACTED]"
_SECRET_NAME = r"[\w.-]*(?:token|secret|passw(?:or)?d|api_?key|signature|session)[\w.-]*"  # noqa: S105
_REDACTIONS = [
    # a query parameter (or form field) whose name says it holds a credential
    (re.compile(rf"(?i)([?&;]{_SECRET_NAME}=)[^&;#\s\"'<>]+"), rf"\g<1>{REDACTED}"),
    # an Authorization (or Proxy-Authorization) header's value, after its scheme
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
            r"[^\s\"',;}]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/=-]{8,}"), rf"\g<1>{REDACTED}"),
    # flowdeck's own secrets wherever they appear: tokens, webhook secrets
    (re.compile(r"\b(fdk_|whsec_)[\w+/=-]{8,}"), rf"\g<1>{REDACTED}"),
    # a password in a URL (scheme://user:password@host)
    (re.compile(r"(://[^/\s:@]+:)[^@/\s]+@"), rf"\g<1>{REDACTED}@"),
]


# Something at least one of the redactions needs: most lines (every request's access line)
# hold none, and are passed after one search instead of five substitutions.
_MAYBE_SECRET = re.compile(
    r"(?i)token|secret|passw|api_?key|signature|session|authorization|bearer|fdk_|whsec_|://"
)


def redact(text: str) -> str:
    """``text`` without the credentials it shows (see the module)."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redacted_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, int | float | bytes):
        return arg
    shown = str(arg)
    cleaned = redact(shown)
    return arg if cleaned == shown else cleaned


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message, arguments and exception text in place (keeping the
    arguments' structure: uvicorn's access formatter unpacks them)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redacted_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redacted_arg(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(text)
        if cleaned != text:  # formatters print exc_text when exc_info is gone
            record.exc_info, record.exc_text = None, cleaned


_installed = False


def install_redaction() -> None:
    """Redact every log record this process makes from now on (once; idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


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
