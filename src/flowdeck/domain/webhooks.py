"""Webhook subscriptions, their deliveries and each delivery's attempts, as plain values."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# A signing secret kept encrypted (store/sql_webhooks.py): this prefix + a Fernet token.
SEALED = "fernet:"
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 random bytes


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted)
    SUCCEEDED = "succeeded"  # a 2xx answer
    FAILED = "failed"  # given up: out of attempts or time, or the receiver answered 410


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    owner_id: str
    url: str
    events: list[str]  # type patterns: "run.*", "step.failed", "*"
    run_id: str | None  # one run; None: every run of the owner
    enabled: bool
    secret: str  # "whsec_" + base64; kept usable (not hashed): deliveries are signed with it
    created_at: datetime
    updated_at: datetime
    previous_secret: str | None = None  # still signs until previous_secret_until
    previous_secret_until: datetime | None = None
    disabled_reason: str | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets deliveries are signed with now: the current one, and the previous
        one during the overlap after a rotation."""
        if (
            self.previous_secret is not None
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        ):
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event sent to one subscription; its id is the ``webhook-id`` of every attempt."""

    id: str
    subscription_id: str
    event_id: int
    event_type: str
    payload: str  # the exact JSON body, the same on every attempt
    state: DeliveryState
    attempts: int  # made so far
    created_at: datetime
    next_attempt_at: datetime | None  # pending: when it is due (or its lease ends)
    deadline: datetime  # no automatic retry after this time
    give_up_after: int  # no automatic retry after this attempt number
    last_status: int | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    number: int  # from 1
    at: datetime
    status: int | None  # the HTTP status, or None when no answer came
    error: str | None  # why it failed (None: succeeded)
    latency_ms: float


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


PATTERN = re.compile(r"^(\*|[a-z][a-z0-9_]*)(\.(\*|[a-z][a-z0-9_]*))*$")
