"""Stream ports of a run: write records into a stream input, read the records of a
stream output as they come."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import aclosing
from typing import Any, ClassVar

import httpx

from flowdeck.client._async.http import AsyncHTTP
from flowdeck.client._backend import AsyncBackend, AsyncStream
from flowdeck.client._shared import (
    DEFAULT_WAIT_S,
    Reconnect,
    Record,
    buffer_delay,
    ndjson,
    port_url,
    retryable,
)
from flowdeck.client.errors import ApiError, ThrottledError


class AsyncPort:
    """A stream port of a run: ``name`` of run ``run_id``, at ``url``."""

    DIRECTION: ClassVar[str]

    def __init__(self, client: AsyncHTTP, run_id: str, name: str) -> None:
        self.client = client
        self.run_id = run_id
        self.name = name
        self.url = port_url(run_id, self.DIRECTION, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.run_id}/{self.name}>"


class AsyncInputPort(AsyncPort):
    """A stream input of a run: ``run.input("records").write([{"n": 1}])``."""

    DIRECTION: ClassVar[str] = "inputs"

    async def write(self, records: Iterable[Any], *, retry_for: float = 60.0) -> dict[str, Any]:
        """Append records (any JSON values), stored with their offsets before the answer
        ``{port, first, last, records}``.  While the port's buffer is full (the step has
        not read enough yet) the push is retried after the server's ``Retry-After``, for
        ``retry_for`` seconds at most; then :class:`ThrottledError` is raised."""
        return await self.write_ndjson(ndjson(records), retry_for=retry_for)

    async def write_ndjson(self, body: bytes | str, *, retry_for: float = 60.0) -> dict[str, Any]:
        """Append records given as NDJSON text (one JSON document a line)."""
        content = body.encode() if isinstance(body, str) else body
        deadline = time.monotonic() + retry_for
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
                if time.monotonic() + delay > deadline:
                    raise
                await AsyncBackend.sleep(delay)

    async def close(self) -> dict[str, Any]:
        """End the input: its step reads EOF after the last record (harmless twice)."""
        result: dict[str, Any] = await self.client.request("POST", self.url + "/close")
        return result


class AsyncOutputPort(AsyncPort):
    """A stream output of a run: ``for record in run.output("results").read(): ...``."""

    DIRECTION: ClassVar[str] = "outputs"

    def _still_open(self) -> TimeoutError:
        return TimeoutError(f"output {self.name!r} of run {self.run_id} is still open")

    async def page(self, from_: int = 0, limit: int = 1000, wait: float = 0) -> dict[str, Any]:
        """One answer of the server: ``{port, records, next, closed}``; it waits up to
        ``wait`` seconds for a record if there is none yet."""
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
        timeout: float | None = None,
        reconnect: Reconnect | None = None,
    ) -> AsyncStream[Record]:
        """The records from offset ``from_``.  With ``follow`` (the default) it goes on
        until the port is closed and read to its end, by long polls (or by following the
        server-sent events with ``sse=True``), reconnecting after network trouble; without
        it, only the records there are now.  ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        policy = reconnect or Reconnect()
        if sse and follow:
            async with aclosing(self._follow_sse(from_, policy, deadline)) as records:
                async for record in records:
                    yield record
            return
        start = from_
        while True:
            poll = 0.0 if not follow else wait
            if follow and deadline is not None:
                poll = max(0.0, min(wait, deadline - time.monotonic()))
            try:
                page = await self.page(start, wait=poll)
            except ApiError as exc:
                if not retryable(exc):
                    raise
                await AsyncBackend.sleep(policy.failed(exc))
                continue
            policy.delivered()
            for body in page["records"]:
                yield Record.of(body)
            start = int(page["next"])
            if not page["records"] and (page["closed"] or not follow):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise self._still_open()

    async def _follow_sse(
        self, start: int, policy: Reconnect, deadline: float | None
    ) -> AsyncStream[Record]:
        after = start - 1 if start > 0 else None
        stream = self.client.follow(self.url, [], after, policy, deadline)
        try:
            async with aclosing(stream) as sses:
                async for sse in sses:
                    if sse.event == "closed":
                        return
                    if sse.event == "record" and sse.data:
                        yield Record.of(json.loads(sse.data))
        except TimeoutError:
            raise self._still_open() from None
