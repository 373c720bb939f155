"""A lean HTTP/1.1 load generator: raw keep-alive connections on asyncio streams.

On a 2-core machine the load generator shares the cores with the server, its supervisor
and the database, so the generator's own cost caps the rate it measures.  httpx costs
1 to 7 ms of CPU per request here (it builds and validates full request and response models);
writing a prebuilt request and reading back the status line, the headers and
``Content-Length`` bytes costs ~0.05 ms, as ``wrk`` does.  Only what flowdeck's API sends is
understood: responses with a ``Content-Length`` (no chunked bodies).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from urllib.parse import urlsplit


class Response:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> object:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        return cls(reader, writer)

    async def send(self, request: bytes) -> Response:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("rawhttp: chunked responses are not supported")
        body = await self.reader.readexactly(length) if length else b""
        return Response(status, body)

    def close(self) -> None:
        self.writer.close()


class BlockingConnection:
    """One keep-alive connection on a plain socket, for latency measured one request at a
    time (the client's own cost stays out of the figure, as far as Python allows)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str) -> Response:
        self.sock.sendall(request(self.url, self.token, "GET", path))
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status, body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def request(url: str, token: str, method: str, path: str, body: object | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request, built once and sent many times."""
    host = urlsplit(url).netloc
    payload = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:  # (servers without authentication: no header, as their clients send)
        head.append(f"Authorization: Bearer {token}")
    head.append(f"Content-Length: {len(payload)}")
    if body is not None:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def fixed_count(
    url: str,
    req: bytes,
    n: int,
    concurrency: int,
    on_response: Callable[[Response], None] | None = None,
) -> None:
    """Send ``req`` ``n`` times over ``concurrency`` connections; raises on a status >= 300."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        conn = await Connection.open(url)
        try:
            while remaining > 0:
                remaining -= 1
                r = await conn.send(req)
                if r.status >= 300:
                    raise RuntimeError(f"{r.status}: {r.body[:300]!r}")
                if on_response is not None:
                    on_response(r)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def for_duration(url: str, req: bytes, seconds: float, concurrency: int) -> int:
    """Send ``req`` over ``concurrency`` connections for ``seconds``; the count answered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        conn = await Connection.open(url)
        try:
            while loop.time() < deadline:
                r = await conn.send(req)
                if r.status >= 300:
                    raise RuntimeError(f"{r.status}: {r.body[:300]!r}")
                done += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done
