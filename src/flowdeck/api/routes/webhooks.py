"""/api/v1/webhooks: subscriptions, secret rotation, the delivery log, redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from flowdeck.api.deps import ActorDep, CtxDep
from flowdeck.api.params import check_cursor, cursor_query
from flowdeck.api.schemas_webhooks import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
)

router = APIRouter(tags=["webhooks"])
Limit = Annotated[int, Query(ge=1, le=200)]
Before = Annotated[str | None, cursor_query("wh", "Cursor: next_before of the previous page.")]
DeliveriesBefore = Annotated[
    str | None, cursor_query("msg", "Cursor: next_before of the previous page.")
]


@router.post("/webhooks", status_code=201, response_model=WebhookCreated)
def create_webhook(body: WebhookIn, ctx: CtxDep, actor: ActorDep) -> WebhookCreated:
    """Subscribe a URL to the events of one run (`run_id`) or of all your runs; the
    answer holds the signing secret, shown only here. 422 for a refused URL."""
    sub = ctx.webhooks.create(actor, body.url, body.events, body.run_id)
    return WebhookCreated.with_secret(sub)


@router.get("/webhooks", response_model=WebhookPage)
def list_webhooks(
    ctx: CtxDep, actor: ActorDep, limit: Limit = 50, before: Before = None
) -> WebhookPage:
    """Your webhooks (an admin's: everyone's), newest first."""
    check_cursor(before, "wh", "before")
    subs = ctx.webhooks.subscriptions(actor, before=before, limit=limit)
    return WebhookPage(
        items=[WebhookOut.of(s) for s in subs],
        next_before=subs[-1].id if len(subs) == limit else None,
    )


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut)
def get_webhook(webhook_id: str, ctx: CtxDep, actor: ActorDep) -> WebhookOut:
    return WebhookOut.of(ctx.webhooks.get(actor, webhook_id))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut)
def update_webhook(webhook_id: str, body: WebhookPatch, ctx: CtxDep, actor: ActorDep) -> WebhookOut:
    """Enable or disable it, or change its events or URL."""
    sub = ctx.webhooks.update(
        actor, webhook_id, enabled=body.enabled, events=body.events, url=body.url
    )
    return WebhookOut.of(sub)


@router.delete("/webhooks/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, ctx: CtxDep, actor: ActorDep) -> None:
    """Its pending deliveries and its delivery log go with it."""
    ctx.webhooks.delete(actor, webhook_id)


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=WebhookCreated)
def rotate_secret(webhook_id: str, ctx: CtxDep, actor: ActorDep) -> WebhookCreated:
    """A new secret (shown only here); for `webhook_secret_overlap_s` deliveries carry a
    signature with each of the new and the previous secret."""
    return WebhookCreated.with_secret(ctx.webhooks.rotate_secret(actor, webhook_id))


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryPage)
def list_deliveries(
    webhook_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    limit: Limit = 50,
    before: DeliveriesBefore = None,
) -> DeliveryPage:
    """Deliveries, newest first, each with its attempts."""
    check_cursor(before, "msg", "before")
    found = ctx.webhooks.deliveries(actor, webhook_id, before=before, limit=limit)
    return DeliveryPage(
        items=[DeliveryOut.of(d, attempts) for d, attempts in found],
        next_before=found[-1][0].id if len(found) == limit else None,
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
)
def redeliver(webhook_id: str, delivery_id: str, ctx: CtxDep, actor: ActorDep) -> DeliveryOut:
    """Attempt it again soon, with the same `webhook-id`."""
    return DeliveryOut.of(ctx.webhooks.redeliver(actor, webhook_id, delivery_id), [])
