"""Accounts, roles, tokens and audit entries as plain values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flowdeck.errors import Conflict, InvalidInput


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class AccountStatus(StrEnum):
    PENDING = "pending"  # registered, waiting for an admin's approval
    ACTIVE = "active"
    DISABLED = "disabled"


class TokenKind(StrEnum):
    SESSION = "session"  # from /auth/login; ends at logout
    API = "api"  # named, created by the user, revocable


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    role: Role
    status: AccountStatus
    password_hash: str
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_active(self) -> bool:
        return self.status is AccountStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    user_id: str
    kind: TokenKind
    name: str | None
    token_hash: str
    prefix: str  # the first characters of the secret, to recognise it in a list
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def is_valid(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Throttle:
    """Failed-login counter of one key (an account or a client address)."""

    key: str
    failures: int
    window_started_at: datetime
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor_id: str | None
    actor_name: str | None
    action: str
    target: str | None
    address: str | None
    details: dict[str, Any] = field(default_factory=dict)


# -- rules --------------------------------------------------------------------------------

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")


def check_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidInput(
            "username must be 3 to 64 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="username",
        )


# Account status changes an admin may make: action -> (states it applies to, state entered).
STATUS_RULES: dict[str, tuple[frozenset[AccountStatus], AccountStatus]] = {
    "approve": (frozenset({AccountStatus.PENDING}), AccountStatus.ACTIVE),
    "enable": (frozenset({AccountStatus.DISABLED}), AccountStatus.ACTIVE),
    "disable": (frozenset({AccountStatus.PENDING, AccountStatus.ACTIVE}), AccountStatus.DISABLED),
}


def next_status(action: str, current: AccountStatus) -> AccountStatus:
    allowed_from, target = STATUS_RULES[action]
    if current not in allowed_from:
        raise Conflict(f"cannot {action} an account that is {current.value}", state=current.value)
    return target


def count_failure(
    current: Throttle | None,
    key: str,
    now: datetime,
    *,
    window_s: int,
    max_failures: int,
    lockout_s: int,
) -> Throttle:
    """The counter after one more failed login."""
    if current is None or now - current.window_started_at >= timedelta(seconds=window_s):
        failures, started = 1, now
    else:
        failures, started = current.failures + 1, current.window_started_at
    locked = current.locked_until if current is not None else None
    if failures >= max_failures:
        locked = now + timedelta(seconds=lockout_s)
    return Throttle(key=key, failures=failures, window_started_at=started, locked_until=locked)


def retry_after(throttles: list[Throttle], now: datetime) -> int | None:
    """Seconds until every lock among ``throttles`` has ended; None when none is active."""
    ends = [t.locked_until for t in throttles if t.locked_until and t.locked_until > now]
    if not ends:
        return None
    return max(1, math.ceil((max(ends) - now).total_seconds()))
