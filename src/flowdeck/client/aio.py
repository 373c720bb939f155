"""The asynchronous client: the same operations as :class:`flowdeck.client.Client`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from flowdeck.client._shared import (
    API,
    TERMINAL_STATES,
    Event,
    Query,
    Reconnect,
    download_target,
    event_query,
    push_query,
    read_chunks,
    retryable,
    run_query,
    save_atomically,
    stream_headers,
    workflow_body,
)
from flowdeck.client.aio_areas import AsyncGraphMethods, AsyncWebhookMethods
from flowdeck.client.aio_ports import AsyncInputPort, AsyncOutputPort
from flowdeck.client.errors import ApiError, ConnectionFailed, NotFoundError, raise_for

WAIT_STREAM_FAILURES = 2  # then wait() polls instead
AsyncProgress = Callable[[dict[str, Any]], Awaitable[None] | None]


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class AsyncClient(AsyncWebhookMethods, AsyncGraphMethods):
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, verify=verify, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, exc: Exception) -> ConnectionFailed:
        return ConnectionFailed(
            0, "connection_failed", f"cannot reach flowdeck at {self.base_url}: {exc}"
        )

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        raise_for(response)
        return response

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- accounts -------------------------------------------------------------------------
    async def register(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/register", json=body)
        return result

    async def login(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/login", json=body)
        self.token = result["token"]
        return result

    async def logout(self) -> None:
        await self.request("POST", f"{API}/auth/logout")
        self.token = None

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"{API}/auth/me")
        return result

    # -- workflows ------------------------------------------------------------------------
    async def push_workflow(
        self,
        path: str | Path,
        visibility: str = "private",
        *,
        workflow_type: str = "auto",
        main: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`flowdeck.client.Client.push_workflow` (CWL included)."""
        path = Path(path)
        query = push_query(path, visibility, workflow_type, main, name, version)
        body, media = workflow_body(path)
        with body:
            result: dict[str, Any] = await self.request(
                "POST",
                f"{API}/workflows",
                params=query,
                content=_aiter(read_chunks(body)),
                headers={"Content-Type": media},
            )
        return result

    async def validate_workflow(self, path: str | Path) -> dict[str, Any]:
        body, media = workflow_body(Path(path))
        with body:
            result: dict[str, Any] = await self.request(
                "POST",
                f"{API}/workflows/validate",
                content=_aiter(read_chunks(body)),
                headers={"Content-Type": media},
            )
        return result

    async def workflows(
        self, name: str | None = None, owner: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": min(limit, 500)}
        for key, value in (("name", name), ("owner", owner)):
            if value:
                params[key] = value
        page = await self.request("GET", f"{API}/workflows", params=params)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def workflow(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"{API}/workflows/{ref}")
        return result

    # -- runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        start: bool = False,
    ) -> AsyncRun:
        body: dict[str, Any] = {"workflow": workflow, "start": start}
        for key, value in (("params", params), ("resources", resources), ("tags", tags)):
            if value:
                body[key] = value
        return AsyncRun(self, await self.request("POST", f"{API}/runs", json=body))

    async def run(self, run_id: str) -> AsyncRun:
        return AsyncRun(self, await self.request("GET", f"{API}/runs/{run_id}"))

    async def runs(
        self,
        state: list[str] | str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        limit: int = 50,
    ) -> list[AsyncRun]:
        query = run_query(state, workflow, tag, owner, min(limit, 500), None)
        page = await self.request("GET", f"{API}/runs", params=query)
        return [AsyncRun(self, item) for item in page["items"]]

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[Event]:
        query = event_query(runs, types, after, limit)
        return [Event.of(e) for e in await self.request("GET", f"{API}/events", params=query)]

    def events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        reconnect: Reconnect | None = None,
    ) -> AsyncIterator[Event]:
        return self.stream(f"{API}/events", event_query(runs, types, None), after, reconnect)

    async def stream(
        self,
        path: str,
        query: Query,
        after: int | None = None,
        reconnect: Reconnect | None = None,
    ) -> AsyncIterator[Event]:
        """Events of an SSE URL, reconnecting with ``Last-Event-ID``; 4xx are raised."""
        policy = reconnect or Reconnect()
        last = after
        while True:
            try:
                async for event in self._stream_once(path, query, last):
                    policy.delivered()
                    last = event.id
                    yield event
                delay = policy.failed(ConnectionFailed(0, "stream_ended", "the stream ended"))
            except ApiError as exc:
                if not retryable(exc):
                    raise
                delay = policy.failed(exc)
            await anyio.sleep(delay)

    async def _stream_once(self, path: str, query: Query, last: int | None) -> AsyncIterator[Event]:
        headers = self._headers(stream_headers(last))
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "GET", path, params=query, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for(response)
                async for sse in EventSource(response).aiter_sse():
                    if sse.data:
                        yield Event.parse(sse.data)
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise self._unreachable(exc) from exc


class AsyncRun:
    """One run, for :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<AsyncRun {self.id} {self.state}>"

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def url(self) -> str:
        return f"{API}/runs/{self.id}"

    async def _update(self, method: str, path: str = "", **kwargs: Any) -> dict[str, Any]:
        self.data = await self.client.request(method, self.url + path, **kwargs)
        return self.data

    async def stage_params(
        self, values: dict[str, Any] | None = None, **more: Any
    ) -> dict[str, Any]:
        return await self._update("PATCH", "/params", json={**(values or {}), **more})

    async def upload(
        self, input: str, path: str | Path, filename: str | None = None
    ) -> dict[str, Any]:
        path = Path(path)
        body = await anyio.to_thread.run_sync(path.open, "rb")
        with body:
            result: dict[str, Any] = await self.client.request(
                "PUT",
                f"{self.url}/files/{input}",
                params={"filename": filename or path.name},
                content=_aiter(read_chunks(body)),
                headers={"Content-Type": "application/octet-stream"},
            )
        return result

    async def files(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.client.request("GET", f"{self.url}/files")
        return result

    async def validate(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.request("POST", f"{self.url}/validate")
        return result

    async def logs(
        self, step: str, stream: str = "stdout", index: int = -1, offset: int = 0
    ) -> tuple[bytes, int]:
        params: dict[str, Any] = {"stream": stream, "index": index, "offset": offset}
        response = await self.client.send("GET", f"{self.url}/steps/{step}/logs", params=params)
        return response.content, int(response.headers.get("x-next-offset", offset))

    async def list_events(
        self, types: list[str] | None = None, after: int | None = None, limit: int = 100
    ) -> list[Event]:
        query = event_query(None, types, after, limit)
        found = await self.client.request("GET", f"{self.url}/events", params=query)
        return [Event.of(e) for e in found]

    async def delete(self) -> None:
        await self.client.request("DELETE", self.url)

    async def rerun(
        self, from_step: str | None = None, params: dict[str, Any] | None = None
    ) -> AsyncRun:
        """A new queued run of this ended run (unchanged steps reused from the cache)."""
        body: dict[str, Any] = {}
        if from_step:
            body["from_step"] = from_step
        if params:
            body["params"] = params
        return AsyncRun(
            self.client, await self.client.request("POST", self.url + "/rerun", json=body)
        )

    async def ports(self) -> list[dict[str, Any]]:
        ports: list[dict[str, Any]] = (await self.status()).get("ports") or []
        return ports

    def input(self, port: str) -> AsyncInputPort:
        return AsyncInputPort(self.client, self.id, port)

    def output(self, port: str) -> AsyncOutputPort:
        return AsyncOutputPort(self.client, self.id, port)

    async def set_resources(self, **resources: Any) -> dict[str, Any]:
        return await self._update("PUT", "/resources", json=resources)

    async def start(self) -> dict[str, Any]:
        return await self._update("POST", "/start")

    async def status(self) -> dict[str, Any]:
        return await self._update("GET")

    async def steps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.client.request("GET", f"{self.url}/steps")
        return result

    async def pause(self, mode: str = "freeze") -> dict[str, Any]:
        return await self._update("POST", "/pause", json={"mode": mode})

    async def resume(self) -> dict[str, Any]:
        return await self._update("POST", "/resume")

    async def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        return await self._update("POST", "/stop", json={"grace_s": grace_s} if grace_s else {})

    async def kill(self) -> dict[str, Any]:
        return await self._update("POST", "/kill")

    async def products(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.client.request("GET", f"{self.url}/products")
        return result

    async def download(self, product: str | dict[str, Any], dest: str | Path) -> Path:
        """Save one product (id, name or listing entry) to ``dest`` (file or directory)."""
        entry = product if isinstance(product, dict) else None
        if entry is None:
            found = await self.products()
            entry = next((p for p in found if product in (p["id"], p["name"])), None)
        if entry is None:
            raise NotFoundError(404, "not_found", f"run {self.id} has no product {product!r}")
        target = download_target(Path(dest), entry["name"])
        response = await self.client.send("GET", entry["url"])
        return await anyio.to_thread.run_sync(save_atomically, target, iter([response.content]))

    async def events(
        self,
        types: list[str] | None = None,
        after: int | None = None,
        *,
        until_done: bool = True,
        reconnect: Reconnect | None = None,
    ) -> AsyncIterator[Event]:
        query = event_query(None, types, None)
        async for event in self.client.stream(f"{self.url}/events", query, after, reconnect):
            yield event
            if until_done and event.ends_run:
                return

    async def wait(self, progress: AsyncProgress | None = None) -> dict[str, Any]:
        """Until the run ends: follows its event stream, polls only if streaming fails.
        Bound it with ``anyio.fail_after`` (or ``asyncio.timeout``)."""

        async def report(status: dict[str, Any]) -> None:
            if progress is not None:
                result = progress(status)
                if result is not None:
                    await result

        status = await self.status()
        await report(status)
        if self.done:
            return status
        try:
            reconnect = Reconnect(max_failures=WAIT_STREAM_FAILURES)
            async for event in self.events(types=["run.*", "step.*"], reconnect=reconnect):
                status = await self.status()
                await report(status)
                if event.ends_run:
                    return status
        except ApiError as exc:
            if not retryable(exc):
                raise
        delay = 0.2
        while not self.done:
            await anyio.sleep(delay)
            delay = min(2.0, delay * 1.5)
            await report(await self.status())
        return self.data
