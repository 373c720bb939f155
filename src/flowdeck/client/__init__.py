"""The Python SDK: talks to a flowdeck server over HTTP only.

from flowdeck.client import Client
with Client("http://127.0.0.1:8080") as fd:
    fd.login("alice", "a long passphrase")
    print(fd.me())
"""

from __future__ import annotations

from flowdeck.client._shared import TERMINAL_STATES, Event, Reconnect
from flowdeck.client.aio import AsyncClient, AsyncRun
from flowdeck.client.aio_areas import AsyncGraph
from flowdeck.client.aio_ports import AsyncInputPort, AsyncOutputPort
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
from flowdeck.client.graphs import Graph
from flowdeck.client.ports import InputPort, OutputPort, Record
from flowdeck.client.run import Run
from flowdeck.client.sync import Client

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
