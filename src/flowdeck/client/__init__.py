"""The Python SDK: talks to a flowdeck server over HTTP only.

from flowdeck.client import Client
with Client("http://127.0.0.1:8080") as fd:
    fd.login("alice", "a long passphrase")
    print(fd.me())
"""

from __future__ import annotations

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
from flowdeck.client.sync import Client

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "ConnectionFailed",
    "InvalidRequest",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerError",
    "ThrottledError",
]
