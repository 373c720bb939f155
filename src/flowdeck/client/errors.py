"""Typed exceptions for HTTP errors, carrying the server's code, message and details."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """The flowdeck server refused the request."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class ConnectionFailed(ApiError):
    """The flowdeck server could not be reached."""


class InvalidRequest(ApiError):
    """400/422: the request is not valid."""


class AuthenticationError(ApiError):
    """401: log in first, or the token is no longer valid."""


class PermissionDeniedError(ApiError):
    """403."""


class NotFoundError(ApiError):
    """404."""


class ConflictError(ApiError):
    """409."""


class ThrottledError(ApiError):
    """429: too many attempts."""

    @property
    def retry_after_s(self) -> int | None:
        value = self.details.get("retry_after_s")
        return int(value) if value is not None else None


class ServerError(ApiError):
    """5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequest,
    422: InvalidRequest,
    429: ThrottledError,
}


def raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        err = response.json()["error"]
        code, message, details = err["code"], err["message"], err.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:200] or response.reason_phrase, {}
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ApiError
    raise cls(response.status_code, code, message, details)
