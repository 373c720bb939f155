"""Stream ports of a run, for :class:`flowdeck.client.AsyncClient`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from flowdeck.client._shared import Reconnect, retryable
from flowdeck.client.errors import ApiError, ConnectionFailed, ThrottledError, raise_for
from flowdeck.client.ports import (
    DEFAULT_WAIT_S,
    Record,
    buffer_delay,
    ndjson,
    port_url,
    sse_headers,
)

if TYPE_CHECKING:
    from flowdeck.client.aio import AsyncClient


class AsyncInputPort:
    """A stream input of a run: ``await run.input("records").write([{"n": 1}])``."""

    def __init__(self, client: AsyncClient, run_id: str, name: str) -> None:
        self.client = client
        self.run_id = run_id
        self.name = name
        self.url = port_url(run_id, "inputs", name)

    async def write(self, records: Iterable[Any], *, retry_for: float = 60.0) -> dict[str, Any]:
        """Append records; a full buffer is retried after ``Retry-After`` (``retry_for``
        seconds at most)."""
        return await self.write_ndjson(ndjson(records), retry_for=retry_for)

    async def write_ndjson(self, body: bytes | str, *, retry_for: float = 60.0) -> dict[str, Any]:
        content = body.encode() if isinstance(body, str) else body
        deadline = anyio.current_time() + retry_for
        while True:
            try:
                result: dict[str, Any] = await self.client.request(
                    "POST",
                    self.url,
                    content=content,
                    headers={"Content-Type": "application/x-ndjson"},
                )
                return result
            except ThrottledError as exc:
                delay = buffer_delay(exc)
                if anyio.current_time() + delay > deadline:
                    raise
                await anyio.sleep(delay)

    async def close(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.request("POST", self.url + "/close")
        return result


class AsyncOutputPort:
    """A stream output of a run: ``async for record in run.output("results").read()``."""

    def __init__(self, client: AsyncClient, run_id: str, name: str) -> None:
        self.client = client
        self.run_id = run_id
        self.name = name
        self.url = port_url(run_id, "outputs", name)

    async def page(self, from_: int = 0, limit: int = 1000, wait: float = 0) -> dict[str, Any]:
        params = {"from": from_, "limit": limit, "wait": wait}
        timeout = httpx.Timeout(self.client.timeout, read=self.client.timeout + wait)
        result: dict[str, Any] = await self.client.request(
            "GET", self.url, params=params, timeout=timeout
        )
        return result

    async def read(
        self,
        from_: int = 0,
        *,
        follow: bool = True,
        sse: bool = False,
        wait: float = DEFAULT_WAIT_S,
        reconnect: Reconnect | None = None,
    ) -> AsyncIterator[Record]:
        """The records from offset ``from_`` until the port is closed (``follow``), by
        long polls or server-sent events (``sse=True``); bound it with
        ``anyio.fail_after``."""
        policy = reconnect or Reconnect()
        if sse and follow:
            async for record in self._follow_sse(from_, policy):
                yield record
            return
        start = from_
        while True:
            try:
                page = await self.page(start, wait=wait if follow else 0)
            except ApiError as exc:
                if not retryable(exc):
                    raise
                await anyio.sleep(policy.failed(exc))
                continue
            policy.delivered()
            for body in page["records"]:
                yield Record.of(body)
            start = int(page["next"])
            if not page["records"] and (page["closed"] or not follow):
                return

    async def _follow_sse(self, start: int, policy: Reconnect) -> AsyncIterator[Record]:
        last = start - 1 if start > 0 else None
        while True:
            try:
                async for record in self._sse_once(last):
                    policy.delivered()
                    if record is None:
                        return
                    last = record.offset
                    yield record
                delay = policy.failed(ConnectionFailed(0, "stream_ended", "the stream ended"))
            except ApiError as exc:
                if not retryable(exc):
                    raise
                delay = policy.failed(exc)
            await anyio.sleep(delay)

    async def _sse_once(self, last: int | None) -> AsyncIterator[Record | None]:
        """The records of one connection; ``None`` once the port is closed."""
        headers = self.client._headers(sse_headers(last))
        timeout = httpx.Timeout(self.client.timeout, read=None)
        try:
            async with self.client._http.stream(
                "GET", self.url, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for(response)
                async for sse in EventSource(response).aiter_sse():
                    if sse.event == "closed":
                        yield None
                        return
                    if sse.event == "record" and sse.data:
                        yield Record.of(json.loads(sse.data))
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise self.client._unreachable(exc) from exc
