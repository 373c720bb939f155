"""The synchronous client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from flowdeck.client._shared import (
    API,
    Event,
    Query,
    Reconnect,
    event_query,
    push_query,
    read_chunks,
    retryable,
    run_query,
    stream_headers,
    workflow_body,
)
from flowdeck.client.areas import GraphMethods, WebhookMethods
from flowdeck.client.errors import ApiError, ConnectionFailed, raise_for
from flowdeck.client.run import Run


class Client(WebhookMethods, GraphMethods):
    """A flowdeck server, over HTTP.  ``token`` is a session or API token; :meth:`login`
    sets one."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``verify``: TLS verification (or a CA bundle's path); ``transport``: a custom
        httpx transport (proxies, retries)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, verify=verify, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer to a request (``None`` for an empty one)."""
        response = self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- accounts -------------------------------------------------------------------------
    def register(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        result: dict[str, Any] = self.request("POST", f"{API}/auth/register", json=body)
        return result

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; the client uses the returned token from now on."""
        body = {"username": username, "password": password}
        result: dict[str, Any] = self.request("POST", f"{API}/auth/login", json=body)
        self.token = result["token"]
        return result

    def logout(self) -> None:
        self.request("POST", f"{API}/auth/logout")
        self.token = None

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{API}/auth/me")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    # -- workflows ------------------------------------------------------------------------
    def push_workflow(
        self,
        path: str | Path,
        visibility: str = "private",
        *,
        workflow_type: str = "auto",
        main: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Store a workflow: a spec or CWL document (.yaml, .yml, .json, .cwl), an archive
        (.zip, .tar.gz, .tgz) or a directory (sent as a .tar.gz built on the fly).
        ``workflow_type`` is ``auto`` (CWL recognised by its content), ``flowdeck`` or
        ``CWL``; for CWL, ``main`` names the file to run in an archive or directory,
        ``name`` and ``version`` default to the file's name and the content hash."""
        path = Path(path)
        query = push_query(path, visibility, workflow_type, main, name, version)
        body, media = workflow_body(path)
        with body:
            result: dict[str, Any] = self.request(
                "POST",
                f"{API}/workflows",
                params=query,
                content=read_chunks(body),
                headers={"Content-Type": media},
            )
        return result

    def validate_workflow(self, path: str | Path) -> dict[str, Any]:
        """The server's verdict on a spec, archive or directory; nothing is stored."""
        body, media = workflow_body(Path(path))
        with body:
            result: dict[str, Any] = self.request(
                "POST",
                f"{API}/workflows/validate",
                content=read_chunks(body),
                headers={"Content-Type": media},
            )
        return result

    def workflows(
        self, name: str | None = None, owner: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Workflows you can see, newest first (at most ``limit``)."""
        items: list[dict[str, Any]] = []
        before: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(500, limit - len(items))}
            for key, value in (("name", name), ("owner", owner), ("before", before)):
                if value:
                    params[key] = value
            page = self.request("GET", f"{API}/workflows", params=params)
            items += page["items"]
            before = page["next_before"]
            if not before:
                break
        return items

    def workflow(self, ref: str) -> dict[str, Any]:
        """One version: ``name@version``, ``owner/name@version`` or ``…@latest``."""
        result: dict[str, Any] = self.request("GET", f"{API}/workflows/{ref}")
        return result

    # -- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        start: bool = False,
    ) -> Run:
        body: dict[str, Any] = {"workflow": workflow, "start": start}
        for key, value in (("params", params), ("resources", resources), ("tags", tags)):
            if value:
                body[key] = value
        return Run(self, self.request("POST", f"{API}/runs", json=body))

    def run(self, run_id: str) -> Run:
        """A run you may read (its status is fetched now)."""
        return Run(self, self.request("GET", f"{API}/runs/{run_id}"))

    def runs(
        self,
        state: list[str] | str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Your runs (admins: all), newest first, at most ``limit``."""
        found: list[Run] = []
        cursor: str | None = None
        while len(found) < limit:
            query = run_query(state, workflow, tag, owner, min(500, limit - len(found)), cursor)
            page = self.request("GET", f"{API}/runs", params=query)
            found += [Run(self, item) for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        return found

    # -- events ---------------------------------------------------------------------------
    def list_events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        found = self.request("GET", f"{API}/events", params=event_query(runs, types, after, limit))
        return [Event.of(e) for e in found]

    def events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        reconnect: Reconnect | None = None,
    ) -> Iterator[Event]:
        """The live stream of your runs' events (from now, or after event ``after``).  It
        reconnects by itself and resumes with ``Last-Event-ID``: no event is lost or
        repeated."""
        return self.stream(f"{API}/events", event_query(runs, types, None), after, reconnect)

    def stream(
        self,
        path: str,
        query: Query,
        after: int | None = None,
        reconnect: Reconnect | None = None,
        deadline: float | None = None,
    ) -> Iterator[Event]:
        """Events of an SSE URL, reconnecting (with ``Last-Event-ID``) whenever the stream
        ends or breaks; 4xx answers are raised at once.  ``deadline`` (a monotonic time)
        ends the stream with :class:`TimeoutError`."""
        policy = reconnect or Reconnect()
        last = after
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the event stream reached its deadline")
            try:
                for event in self._stream_once(path, query, last, deadline):
                    policy.delivered()
                    last = event.id
                    yield event
                delay = policy.failed(ConnectionFailed(0, "stream_ended", "the stream ended"))
            except ApiError as exc:
                if not retryable(exc):
                    raise
                delay = policy.failed(exc)
            time.sleep(delay)

    def _stream_once(
        self,
        path: str,
        query: Query,
        last: int | None,
        deadline: float | None,
    ) -> Iterator[Event]:
        headers = self._headers(stream_headers(last))
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self._http.stream(
                "GET", path, params=query, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response)
                timer = None
                if deadline is not None:
                    timer = threading.Timer(
                        max(0.0, deadline - time.monotonic()), _interrupt, [response]
                    )
                    timer.daemon = True
                    timer.start()
                try:
                    for sse in EventSource(response).iter_sse():
                        if sse.data:
                            yield Event.parse(sse.data)
                finally:
                    if timer is not None:
                        timer.cancel()
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise self._unreachable(exc) from exc


def _interrupt(response: httpx.Response) -> None:
    """End a read blocked on ``response``'s socket (from another thread): shutting the
    socket down wakes the reader, which then sees the stream end."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
