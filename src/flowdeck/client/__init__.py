"""The Python SDK: talks to a flowdeck server over HTTP only.

from flowdeck.client import Client
with Client("http://127.0.0.1:8080") as fd:
    fd.login("alice", "a long passphrase")
    print(fd.me())

``AsyncClient`` offers the same with ``await``.  Both faces come from one source:
``_async`` is written by hand and ``_sync`` generated from it (scripts/gen_sync_client.py).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from flowdeck.client._shared import TERMINAL_STATES, Event, Reconnect, Record
from flowdeck.client._sync.client import Client
from flowdeck.client._sync.graphs import Graph
from flowdeck.client._sync.ports import InputPort, OutputPort
from flowdeck.client._sync.run import Run
from flowdeck.client.errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    InvalidRequest,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ThrottledError,
)

if TYPE_CHECKING:
    from flowdeck.client._async.client import AsyncClient
    from flowdeck.client._async.graphs import AsyncGraph
    from flowdeck.client._async.ports import AsyncInputPort, AsyncOutputPort
    from flowdeck.client._async.run import AsyncRun

# The asynchronous face is imported when first asked for: a synchronous program (the
# command line) does not pay for it.
_ASYNC = {
    "AsyncClient": "flowdeck.client._async.client",
    "AsyncGraph": "flowdeck.client._async.graphs",
    "AsyncInputPort": "flowdeck.client._async.ports",
    "AsyncOutputPort": "flowdeck.client._async.ports",
    "AsyncRun": "flowdeck.client._async.run",
}


def __getattr__(name: str) -> Any:
    if name in _ASYNC:
        value = getattr(import_module(_ASYNC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowdeck.client' has no attribute {name!r}")


__all__ = [
    "TERMINAL_STATES",
    "ApiError",
    "AsyncClient",
    "AsyncGraph",
    "AsyncInputPort",
    "AsyncOutputPort",
    "AsyncRun",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ConnectionFailed",
    "Event",
    "Graph",
    "InputPort",
    "InvalidRequest",
    "NotFoundError",
    "OutputPort",
    "PermissionDeniedError",
    "Reconnect",
    "Record",
    "Run",
    "ServerError",
    "ThrottledError",
]
