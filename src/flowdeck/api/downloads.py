"""File downloads with ``Range`` requests answered as RFC 9110 (section 14) says.

- A satisfiable ``bytes`` range set: 206 with the satisfiable ranges (one part, or
  ``multipart/byteranges``).
- A valid set that no byte of the file satisfies (``bytes=LEN-``, ``bytes=-0``): 416 with
  ``Content-Range: bytes */LEN`` and the JSON error (:class:`RangeNotSatisfiable`).
- A syntactically invalid ``Range`` (``bytes=5-1``, ``bytes=abc``), another range unit,
  too many ranges, or an ``If-Range`` that does not match: the header is ignored and the
  whole file sent with 200.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from flowdeck.errors import RangeNotSatisfiable

MAX_RANGES = 100
_SPEC = re.compile(r"(\d*)-(\d*)")

Ranges = list[tuple[int, int]]  # (first, last), both included


def parse_range(value: str, size: int) -> Ranges | None:
    """The satisfiable byte ranges a ``Range`` header asks of a file of ``size`` bytes;
    ``[]`` when it is valid but none is satisfiable; None when it is to be ignored."""
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip().lower() != "bytes" or size == 0:
        return None  # (an empty file has no byte to give: it is sent whole)
    parts = [p.strip() for p in spec.split(",")]
    parts = [p for p in parts if p]  # a list may hold empty elements
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: Ranges = []
    for part in parts:
        match = _SPEC.fullmatch(part)
        if match is None or match.group(0) == "-":
            return None
        first, last = match.groups()
        if first:  # first-last or first-
            start = int(first)
            if last and int(last) < start:
                return None
            if start < size:
                ranges.append((start, min(int(last), size - 1) if last else size - 1))
        elif int(last) > 0 and size > 0:  # -suffix
            ranges.append((max(size - int(last), 0), size - 1))
    return ranges


class _File(FileResponse):
    """A FileResponse that answers ``Range`` as the module says: Starlette sees only the
    ranges chosen here, in a canonical form it reads as meant, never the request's own."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self._ranges(Headers(scope=scope), scope.get("method", "GET"))
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if chosen is not None:
            headers.append((b"range", chosen.encode("latin-1")))
        await super().__call__({**scope, "headers": headers}, receive, send)

    def _ranges(self, request: Headers, method: str) -> str | None:
        """The Range header to serve (None: the whole file); raises
        :class:`RangeNotSatisfiable` (416, answered in the usual error shape)."""
        value = request.get("range")
        assert self.stat_result is not None
        size = self.stat_result.st_size
        if value is None or method not in ("GET", "HEAD"):
            return None
        if_range = request.get("if-range")
        validators = (self.headers.get("etag"), self.headers.get("last-modified"))
        if if_range is not None and (if_range.startswith("W/") or if_range not in validators):
            return None  # the file changed since the client's copy: all of it
        ranges = parse_range(value, size)
        if ranges == []:
            raise RangeNotSatisfiable(
                size, f"no byte of the range {value!r} is in the file ({size} bytes)"
            )
        return "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges) if ranges else None


def download(path: Path, *, media_type: str, filename: str | None = None) -> FileResponse:
    """``path`` as an attachment, answering the request's ``Range`` (see the module)."""
    return _File(
        path,
        media_type=media_type,
        filename=filename,
        stat_result=os.stat(path),
        content_disposition_type="attachment",
    )
