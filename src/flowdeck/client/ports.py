"""Stream ports of a run, for the synchronous client: write records into a stream input,
read the records of a stream output as they come."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, SSEError

from flowdeck.client._shared import API, Reconnect, retryable
from flowdeck.client.errors import ApiError, ConnectionFailed, ThrottledError, raise_for

if TYPE_CHECKING:
    from flowdeck.client.sync import Client

DEFAULT_WAIT_S = 30.0  # one long poll waits this long for a record at most
FULL_RETRY_S = 1.0  # when a full buffer answers without Retry-After


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a stream output: its offset in the port, the attempt of the step
    that wrote it (a retried step writes its records again), and the record itself."""

    offset: int
    attempt: int
    data: Any

    @classmethod
    def of(cls, body: dict[str, Any]) -> Record:
        return cls(offset=int(body["offset"]), attempt=int(body["attempt"]), data=body["data"])


def ndjson(records: Iterable[Any]) -> bytes:
    """Records as NDJSON: one compact JSON document a line."""
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def port_url(run_id: str, direction: str, port: str) -> str:
    return f"{API}/runs/{run_id}/{direction}/{port}"


def sse_headers(last_offset: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_offset is not None:
        headers["Last-Event-ID"] = str(last_offset)
    return headers


def buffer_delay(exc: ThrottledError) -> float:
    return float(exc.retry_after_s or FULL_RETRY_S)


class InputPort:
    """A stream input of a run: ``run.input("records").write([{"n": 1}])``."""

    def __init__(self, client: Client, run_id: str, name: str) -> None:
        self.client = client
        self.run_id = run_id
        self.name = name
        self.url = port_url(run_id, "inputs", name)

    def __repr__(self) -> str:
        return f"<InputPort {self.run_id}/{self.name}>"

    def write(self, records: Iterable[Any], *, retry_for: float = 60.0) -> dict[str, Any]:
        """Append records (any JSON values), stored with their offsets before the answer
        ``{port, first, last, records}``.  While the port's buffer is full (the step has
        not read enough yet) the push is retried after the server's ``Retry-After``, for
        ``retry_for`` seconds at most; then :class:`ThrottledError` is raised."""
        return self.write_ndjson(ndjson(records), retry_for=retry_for)

    def write_ndjson(self, body: bytes | str, *, retry_for: float = 60.0) -> dict[str, Any]:
        """Append records given as NDJSON text (one JSON document a line)."""
        content = body.encode() if isinstance(body, str) else body
        deadline = time.monotonic() + retry_for
        while True:
            try:
                result: dict[str, Any] = self.client.request(
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
                time.sleep(delay)

    def close(self) -> dict[str, Any]:
        """End the input: its step reads EOF after the last record (harmless twice)."""
        result: dict[str, Any] = self.client.request("POST", self.url + "/close")
        return result


class OutputPort:
    """A stream output of a run: ``for record in run.output("results").read(): ...``."""

    def __init__(self, client: Client, run_id: str, name: str) -> None:
        self.client = client
        self.run_id = run_id
        self.name = name
        self.url = port_url(run_id, "outputs", name)

    def __repr__(self) -> str:
        return f"<OutputPort {self.run_id}/{self.name}>"

    def page(self, from_: int = 0, limit: int = 1000, wait: float = 0) -> dict[str, Any]:
        """One answer of the server: ``{port, records, next, closed}``."""
        params = {"from": from_, "limit": limit, "wait": wait}
        timeout = httpx.Timeout(self.client.timeout, read=self.client.timeout + wait)
        result: dict[str, Any] = self.client.request(
            "GET", self.url, params=params, timeout=timeout
        )
        return result

    def read(
        self,
        from_: int = 0,
        *,
        follow: bool = True,
        sse: bool = False,
        wait: float = DEFAULT_WAIT_S,
        timeout: float | None = None,
        reconnect: Reconnect | None = None,
    ) -> Iterator[Record]:
        """The records from offset ``from_``.  With ``follow`` (the default) it goes on
        until the port is closed and read to its end, by long polls (or by following the
        server-sent events with ``sse=True``), reconnecting after network trouble; without
        it, only the records there are now.  ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        if sse and follow:
            yield from self._follow_sse(from_, reconnect or Reconnect(), deadline)
            return
        policy = reconnect or Reconnect()
        start = from_
        while True:
            poll = 0.0
            if follow:
                poll = (
                    wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic()))
                )
            try:
                page = self.page(start, wait=poll)
            except ApiError as exc:
                if not retryable(exc):
                    raise
                time.sleep(policy.failed(exc))
                continue
            policy.delivered()
            for body in page["records"]:
                yield Record.of(body)
            start = int(page["next"])
            if not page["records"] and (page["closed"] or not follow):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"output {self.name!r} of run {self.run_id} is still open")

    def _follow_sse(
        self, start: int, policy: Reconnect, deadline: float | None
    ) -> Iterator[Record]:
        last = start - 1 if start > 0 else None
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"output {self.name!r} of run {self.run_id} is still open")
            try:
                for kind, record in self._sse_once(last):
                    policy.delivered()
                    if kind == "closed":
                        return
                    assert record is not None
                    last = record.offset
                    yield record
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"output {self.name!r} of run {self.run_id} is still open"
                        )
                delay = policy.failed(ConnectionFailed(0, "stream_ended", "the stream ended"))
            except ApiError as exc:
                if not retryable(exc):
                    raise
                delay = policy.failed(exc)
            time.sleep(delay)

    def _sse_once(self, last: int | None) -> Iterator[tuple[str, Record | None]]:
        http = self.client._http
        headers = self.client._headers(sse_headers(last))
        timeout = httpx.Timeout(self.client.timeout, read=None)
        try:
            with http.stream("GET", self.url, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response)
                for sse in EventSource(response).iter_sse():
                    if sse.event == "closed":
                        yield "closed", None
                        return
                    if sse.event == "record" and sse.data:
                        yield "record", Record.of(json.loads(sse.data))
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise self.client._unreachable(exc) from exc
