"""Request and response bodies of the webhooks API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from flowdeck.api.schemas import Request
from flowdeck.domain.webhooks import PATTERN, Attempt, Delivery, Subscription

# What a JSON Schema can say of a webhook URL: http(s), no spaces or control characters.
# The service checks it (422 url_refused, with the reason), and its host, port and
# addresses too (see docs/webhooks.md).
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f]+$"
_URL = Field(
    min_length=1,
    max_length=2048,
    description="http(s) URL receiving the events.",
    json_schema_extra={"pattern": URL_PATTERN},
)
# Checked by the service too, which names the pattern that is wrong.
_EVENT_ITEM: JsonDict = {"type": "string", "maxLength": 64, "pattern": PATTERN.pattern}
_EVENTS = Field(
    min_length=1,
    max_length=20,
    description="Event type patterns: run.*, step.failed, *",
    json_schema_extra={"items": _EVENT_ITEM},
)


class CallbackIn(Request):
    url: str = _URL
    events: list[str] = _EVENTS


class WebhookIn(CallbackIn):
    run_id: str | None = Field(
        None, max_length=40, description="One run you may change; none: all your runs."
    )


class WebhookPatch(Request):
    enabled: bool | None = None
    events: list[str] | None = Field(
        None, min_length=1, max_length=20, json_schema_extra={"items": _EVENT_ITEM}
    )
    url: str | None = Field(
        None, min_length=1, max_length=2048, json_schema_extra={"pattern": URL_PATTERN}
    )


class CallbackOut(BaseModel):
    id: str
    url: str
    events: list[str]
    secret: str = Field(description="whsec_…: shown only here.")

    @classmethod
    def of(cls, sub: Subscription) -> CallbackOut:
        return cls(id=sub.id, url=sub.url, events=sub.events, secret=sub.secret)


class WebhookOut(BaseModel):
    id: str
    owner_id: str
    url: str
    events: list[str]
    run_id: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="Until then, deliveries are also signed with the previous secret."
    )
    deliveries_url: str

    @classmethod
    def of(cls, sub: Subscription) -> WebhookOut:
        return cls(
            id=sub.id,
            owner_id=sub.owner_id,
            url=sub.url,
            events=sub.events,
            run_id=sub.run_id,
            enabled=sub.enabled,
            disabled_reason=sub.disabled_reason,
            created_at=sub.created_at,
            updated_at=sub.updated_at,
            previous_secret_expires_at=sub.previous_secret_until,
            deliveries_url=f"/api/v1/webhooks/{sub.id}/deliveries",
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_…: shown only here; it signs every delivery.")

    @classmethod
    def with_secret(cls, sub: Subscription) -> WebhookCreated:
        return cls(**WebhookOut.of(sub).model_dump(), secret=sub.secret)


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_before: str | None


class AttemptOut(BaseModel):
    number: int
    at: datetime
    status: int | None = Field(description="The HTTP status; null when no answer came.")
    error: str | None
    latency_ms: float

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            number=a.number, at=a.at, status=a.status, error=a.error, latency_ms=a.latency_ms
        )


class DeliveryOut(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt.")
    event_id: int
    type: str
    state: str
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    last_error: str | None
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, d: Delivery, attempts: list[Attempt]) -> DeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event_id,
            type=d.event_type,
            state=d.state.value,
            created_at=d.created_at,
            next_attempt_at=d.next_attempt_at,
            finished_at=d.finished_at,
            last_status=d.last_status,
            last_error=d.last_error,
            attempts=[AttemptOut.of(a) for a in attempts],
        )


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_before: str | None
