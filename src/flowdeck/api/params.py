"""Shapes of query parameters shared by several routes, declared once so that the OpenAPI
document says what the server checks: event type patterns, RFC 3339 times, and the cursors
of paged lists."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BeforeValidator
from pydantic.config import JsonDict

from flowdeck.domain import events
from flowdeck.errors import InvalidCursor

# -- event type patterns (GET /events?type=…; the service checks them) ----------------------
EVENT_TYPE_ITEM: JsonDict = {"type": "string", "pattern": f"^{events.PATTERN.pattern}$"}

# -- times ----------------------------------------------------------------------------------
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", re.ASCII)


def _rfc3339(value: Any) -> Any:
    """An RFC 3339 date-time with its offset, as the document's ``format: date-time``
    says: not a number of seconds, nor a date alone (pydantic takes both)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time with an offset: 2026-01-31T12:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]

# -- cursors ----------------------------------------------------------------------------------
_ID_BODY = "[0-9a-hjkmnp-tv-z]{26}"  # flowdeck.ids: Crockford base32, time then randomness


def id_pattern(prefix: str) -> str:
    return f"^{prefix}_{_ID_BODY}$"


def cursor_query(prefix: str, description: str) -> Any:
    """A cursor parameter: the id of the last item of the previous page (keyset paging: the
    item need not still exist).  Its pattern is in the document; :func:`check_cursor`
    refuses the rest with 400."""
    return Query(description=description, json_schema_extra={"pattern": id_pattern(prefix)})


def check_cursor(value: str | None, prefix: str, field: str) -> str | None:
    if value is not None and not re.fullmatch(id_pattern(prefix), value):
        raise InvalidCursor(
            f"{field} {value[:60]!r} is not a cursor of this list: pass the next_{field} "
            "of the page before",
            field=field,
        )
    return value
