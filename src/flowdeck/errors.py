"""The one exception root of flowdeck and its domain errors.

Each class's docstring is its default message; ``code`` is the stable, machine-readable
name clients see in ``{"error": {"code": ...}}``.  The HTTP layer maps classes to status
codes in one place (:mod:`flowdeck.api.errors`); nothing below the API knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class FlowdeckError(Exception):
    """flowdeck could not do what was asked."""

    code = "error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (type(self).__doc__ or "").strip().splitlines()[0]
        self.details: dict[str, Any] = details
        super().__init__(self.message)


class ConfigError(FlowdeckError):
    """A setting has an invalid value."""

    code = "invalid_setting"


class InvalidInput(FlowdeckError):
    """The request is not valid."""

    code = "invalid_input"


class JsonTooDeep(InvalidInput):
    """The JSON value is nested too deeply."""

    code = "json_too_deep"


class UrlRefused(InvalidInput):
    """The URL is not allowed as a webhook target."""

    code = "url_refused"


class PasswordRejected(InvalidInput):
    """The password does not meet the password policy."""

    code = "password_rejected"


class ArchiveRejected(InvalidInput):
    """The archive was refused."""

    code = "archive_rejected"


class SpecInvalid(InvalidInput):
    """The workflow specification is not valid."""

    code = "invalid_workflow"


class InvalidCursor(FlowdeckError):
    """The cursor is not one this list gives: pass the next_cursor of the page before."""

    code = "invalid_cursor"


class NotFound(FlowdeckError):
    """No such object, or it is not visible to you."""

    code = "not_found"


class Conflict(FlowdeckError):
    """The request conflicts with the current state of the object."""

    code = "conflict"


class NodeTaken(Conflict):
    """The graph node was started meanwhile (by another server)."""

    code = "node_taken"


class AlreadyExists(Conflict):
    """An object with that name already exists."""

    code = "already_exists"


class AuthenticationRequired(FlowdeckError):
    """Authentication is required: send 'Authorization: Bearer <token>'."""

    code = "authentication_required"


class InvalidCredentials(AuthenticationRequired):
    """Invalid username or password."""

    code = "invalid_credentials"


class InvalidToken(AuthenticationRequired):
    """The token is invalid, expired or revoked."""

    code = "invalid_token"


class PermissionDenied(FlowdeckError):
    """You are not allowed to do this."""

    code = "permission_denied"


class AccountNotActive(PermissionDenied):
    """The account is not active."""

    code = "account_not_active"


class RegistrationClosed(PermissionDenied):
    """Registration is closed on this server; ask an administrator for an account."""

    code = "registration_closed"


class CsrfFailed(PermissionDenied):
    """Missing or wrong CSRF token: send the 'flowdeck_csrf' cookie's value in 'X-CSRF-Token'."""

    code = "csrf_failed"


class Throttled(FlowdeckError):
    """Too many failed attempts; try again later."""

    code = "too_many_attempts"

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


class PortClosed(Conflict):
    """The stream port is closed: it takes no more records."""

    code = "port_closed"


class BufferFull(Throttled):
    """The stream's buffer is full: its step has not read enough yet; try again later."""

    code = "buffer_full"


class RangeNotSatisfiable(FlowdeckError):
    """The requested range is not within the file."""

    code = "range_not_satisfiable"

    def __init__(self, size: int, message: str | None = None) -> None:
        super().__init__(message, size=size)
        self.size = size


class PayloadTooLarge(FlowdeckError):
    """The request body is too large."""

    code = "payload_too_large"


class QuotaExceeded(PayloadTooLarge):
    """The user's quota of stored bytes would be exceeded."""

    code = "quota_exceeded"


class StoreUnavailable(FlowdeckError):
    """The database is unavailable."""

    code = "store_unavailable"


class CwlUnsupported(InvalidInput):
    """The CWL document uses something flowdeck cannot translate."""

    code = "cwl_unsupported"
