"""The input/output seam of the client's two faces, written once for each.

Everything else of :class:`flowdeck.client.AsyncClient` is written once, in
``flowdeck/client/_async/``; ``flowdeck/client/_sync/`` is generated from it by
``scripts/gen_sync_client.py``, which renames ``AsyncBackend`` to ``SyncBackend`` (among the other
names it changes).  The few things that cannot be written once - sleeping, calling back,
streaming a request body, bounding a blocking read in time - are the two classes here.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import IO, Any, TypeVar

import anyio
import httpx

from flowdeck.client.files import read_chunks

T = TypeVar("T")
AsyncProgress = Callable[[dict[str, Any]], Awaitable[None] | None]
Progress = Callable[[dict[str, Any]], None]
# What an iterating method returns: a generator, so that it can be closed early.
AsyncStream = AsyncGenerator[T, None]
SyncStream = Generator[T, None, None]


def _deadline_passed() -> TimeoutError:
    return TimeoutError("the stream reached its deadline")


class AsyncBackend:
    """For :class:`flowdeck.client.AsyncClient`: anyio (asyncio or trio)."""

    @staticmethod
    async def sleep(seconds: float) -> None:
        await anyio.sleep(seconds)

    @staticmethod
    async def report(progress: AsyncProgress | None, status: dict[str, Any]) -> None:
        """Call ``progress`` back (awaiting it if it is a coroutine function)."""
        if progress is not None:
            result = progress(status)
            if inspect.isawaitable(result):
                await result

    @staticmethod
    async def chunks(body: IO[bytes]) -> AsyncIterator[bytes]:
        """An open file as a request body."""
        for chunk in read_chunks(body):
            yield chunk

    @staticmethod
    async def until(
        items: AsyncIterator[T], deadline: float | None, response: httpx.Response
    ) -> AsyncIterator[T]:
        """``items`` until the monotonic ``deadline``; then ``TimeoutError``."""
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                with anyio.fail_after(left):
                    item = await items.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _deadline_passed() from None
            yield item


class SyncBackend:
    """For :class:`flowdeck.client.Client`: plain blocking calls."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    @staticmethod
    def report(progress: Progress | None, status: dict[str, Any]) -> None:
        if progress is not None:
            progress(status)

    @staticmethod
    def chunks(body: IO[bytes]) -> Iterator[bytes]:
        return read_chunks(body)

    @staticmethod
    def until(items: Iterator[T], deadline: float | None, response: httpx.Response) -> Iterator[T]:
        """``items`` until the monotonic ``deadline``: a timer thread then shuts the
        response's socket down, which wakes the blocked read; ``TimeoutError``."""
        if deadline is None:
            yield from items
            return
        fired = threading.Event()

        def interrupt() -> None:
            fired.set()
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield from items
        except Exception:
            if not fired.is_set():
                raise
        finally:
            timer.cancel()
        if fired.is_set():
            raise _deadline_passed()
