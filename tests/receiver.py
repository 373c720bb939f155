"""A real HTTP receiver for webhook tests: a server on 127.0.0.1 in a thread that records
every request and answers from a script."""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, str]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Receiver:
    def __init__(self, answers: list[Answer] | None = None, default: Answer = (204, {})) -> None:
        self.answers: deque[Answer] = deque(answers or [])
        self.default = default
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.url = ""

    def script(self, *answers: Answer) -> None:
        with self.lock:
            self.answers.extend(answers)

    def _answer(self, received: Received) -> Answer:
        with self.lock:
            self.requests.append(received)
            return self.answers.popleft() if self.answers else self.default

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@contextmanager
def receiver(
    answers: list[Answer] | None = None,
    default: Answer = (204, {}),
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1; with ``tls``, over HTTPS, its URL naming ``host``."""
    rec = Receiver(answers, default)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = rec._answer(Received(self.path, headers, body))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    rec.url = f"{scheme}://{host}:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def eventually(
    check: Callable[[], Any], timeout: float = 20, what: str = "condition", interval: float = 0.02
) -> Any:
    """Poll until ``check()`` is truthy (returning it); fail after ``timeout`` seconds
    saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)
