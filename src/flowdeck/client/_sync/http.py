# Generated from client/_async/http.py by scripts/gen_sync_client.py: do not edit.
"""The connection to a flowdeck server: requests, typed errors, downloads, listings and
server-sent event streams that reconnect."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Self

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from flowdeck.client._backend import SyncBackend, SyncStream
from flowdeck.client._shared import (
    EVENT_PAGE,
    PAGE,
    Event,
    Query,
    Reconnect,
    checked_limit,
    page_size,
    retryable,
    stream_headers,
)
from flowdeck.client.errors import ApiError, ConnectionFailed, raise_for


class SyncHTTP:
    """A flowdeck server, over HTTP.  ``token`` is a session or API token; :meth:`login`
    sets one."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``verify``: TLS verification (or a CA bundle's path, or an SSL context);
        ``transport``: a custom httpx transport (proxies, retries).  ``page_size`` (an
        attribute) is the number of items a listing asks for per request: ``None``, the
        most the server gives."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.page_size: int | None = None
        if isinstance(verify, str):  # a CA bundle (file or directory), as httpx wants it
            if Path(verify).is_dir():
                verify = ssl.create_default_context(capath=verify)
            else:
                verify = ssl.create_default_context(cafile=verify)
        elif verify is True and self.base_url.startswith("http://"):
            # A plain-HTTP server needs no CA bundle (loading it costs ~35 ms a client): a
            # context without CAs, that would refuse any TLS peer, never verifies less.
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, verify=verify, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (``async with`` / ``with`` does it)."""
        self._http.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(
            0, "connection_failed", f"cannot reach flowdeck at {self.base_url}: {exc}"
        )

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response to a request (raised as a typed error unless it succeeded)."""
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        raise_for(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer to a request (``None`` for an empty one)."""
        response = self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def pages(
        self, path: str, query: Query, limit: int | None = None, key: str = "items"
    ) -> SyncStream[dict[str, Any]]:
        """The items of a listing, up to ``limit`` (``None``: all), fetched a page at a
        time as they are taken (``next_cursor`` or ``next_before`` of each page leads to
        the next); ``key`` names the page's list."""
        limit = checked_limit(limit)
        size = page_size(self.page_size, PAGE)
        following: Query = []
        taken = 0
        while limit is None or taken < limit:
            ask = size if limit is None else min(size, limit - taken)
            page = self.request("GET", path, params=[*query, *following, ("limit", ask)])
            for item in page[key]:
                yield item
                taken += 1
            if page.get("next_cursor"):
                following = [("cursor", page["next_cursor"])]
            elif page.get("next_before"):
                following = [("before", page["next_before"])]
            else:
                return

    def collect(
        self, path: str, query: Query, limit: int | None, key: str = "items"
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` items of a listing (``None``: all), page after page."""
        with closing(self.pages(path, query, limit, key)) as items:
            return [item for item in items]

    def event_pages(
        self, path: str, query: Query, after: int | None, limit: int | None
    ) -> SyncStream[Event]:
        """The events of an event listing after id ``after``, oldest first, up to
        ``limit`` (``None``: all there are now), a page at a time."""
        limit = checked_limit(limit)
        size = page_size(self.page_size, EVENT_PAGE)
        taken = 0
        while limit is None or taken < limit:
            ask = size if limit is None else min(size, limit - taken)
            since: Query = [] if after is None else [("after", after)]
            found = self.request("GET", path, params=[*query, *since, ("limit", ask)])
            for body in found:
                event = Event.of(body)
                after = event.id
                yield event
                taken += 1
            if len(found) < ask:
                return

    @contextmanager
    def stream_bytes(self, path: str) -> Iterator[Iterator[bytes]]:
        """The body of a GET, chunk by chunk (for downloads)."""
        try:
            with self._http.stream("GET", path, headers=self._headers()) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response)
                yield response.iter_bytes()
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise self._unreachable(exc) from exc

    def sse(
        self, path: str, query: Query, last_id: int | None, deadline: float | None
    ) -> SyncStream[ServerSentEvent]:
        """The server-sent events of one connection to ``path`` (``Last-Event-ID`` set to
        ``last_id``) until it ends, or ``TimeoutError`` at the monotonic ``deadline``."""
        headers = self._headers(stream_headers(last_id))
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream(
                "GET", path, params=query, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response)
                events = EventSource(response).iter_sse()
                for sse in SyncBackend.until(events, deadline, response):
                    yield sse
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise self._unreachable(exc) from exc

    def follow(
        self,
        path: str,
        query: Query,
        after: int | None = None,
        reconnect: Reconnect | None = None,
        deadline: float | None = None,
    ) -> SyncStream[ServerSentEvent]:
        """The server-sent events of ``path`` after id ``after``, reconnecting (with
        ``Last-Event-ID``) whenever the stream ends or breaks; 4xx answers are raised at
        once, and ``TimeoutError`` at the monotonic ``deadline``."""
        policy = reconnect or Reconnect()
        last = after
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the event stream reached its deadline")
            try:
                for sse in self.sse(path, query, last, deadline):
                    policy.delivered()
                    if sse.id:
                        last = int(sse.id)
                    yield sse
                delay = policy.failed(ConnectionFailed(0, "stream_ended", "the stream ended"))
            except ApiError as exc:
                if not retryable(exc):
                    raise
                delay = policy.failed(exc)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            SyncBackend.sleep(delay)
