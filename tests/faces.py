"""The two faces of the SDK under one set of tests.

A test takes a client from :func:`connect` and calls it the synchronous way.  For the
``async`` face the client is an :class:`~flowdeck.client.AsyncClient` seen through a
blocking portal (:class:`Blocking`): each coroutine method is run in the portal's event
loop, each async iterator is iterated there, and SDK objects returned (runs, graphs,
ports) are wrapped in turn.  A method missing from one face, or behaving otherwise, fails
the same test.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from flowdeck.client import AsyncClient, Client

FACES = ("sync", "async")


def blocking(portal: BlockingPortal, value: Any) -> Any:
    if inspect.isasyncgen(value):
        return BlockingIterator(portal, value)
    if isinstance(value, list):
        return [blocking(portal, v) for v in value]
    if type(value).__module__.startswith("flowdeck.client._async"):
        return Blocking(portal, value)
    return value


class BlockingIterator:
    """An async iterator of the SDK, iterated in the portal's loop."""

    def __init__(self, portal: BlockingPortal, agen: Any) -> None:
        self._portal = portal
        self._agen = agen

    def __iter__(self) -> BlockingIterator:
        return self

    def __next__(self) -> Any:
        try:
            return blocking(self._portal, self._portal.call(self._agen.__anext__))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._portal.call(self._agen.aclose)


class Blocking:
    """An object of the asynchronous SDK, called the synchronous way."""

    def __init__(self, portal: BlockingPortal, target: Any) -> None:
        object.__setattr__(self, "_portal", portal)
        object.__setattr__(self, "_target", target)

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value) or isinstance(value, type):
            return blocking(self._portal, value)

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.iscoroutinefunction(value):
                result = self._portal.call(functools.partial(value, *args, **kwargs))
            else:
                result = value(*args, **kwargs)
            return blocking(self._portal, result)

        return call


@contextmanager
def _async_client(url: str, token: str | None = None, **kwargs: Any) -> Iterator[Any]:
    with start_blocking_portal() as portal:
        client = AsyncClient(url, token, **kwargs)
        try:
            yield Blocking(portal, client)
        finally:
            portal.call(client.aclose)


Connect = Callable[..., AbstractContextManager[Any]]


def connect(face: str) -> Connect:
    """``connect(face)(url, token=None, **kwargs)``: a client of that face, as a context
    manager (typed as the synchronous :class:`Client`, which both faces behave as)."""
    if face == "sync":
        return Client
    return _async_client
