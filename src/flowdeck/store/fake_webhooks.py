"""The in-memory store's webhook operations (same contract as :mod:`sql_webhooks`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowdeck.domain.webhooks import Attempt, Delivery, DeliveryState, Subscription
from flowdeck.errors import AlreadyExists, NotFound
from flowdeck.store.base import REFERENCE_GONE

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeWebhooksMixin:
    s: _State

    # -- subscriptions --------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        if sub.owner_id not in self.s.users:
            raise NotFound(REFERENCE_GONE)
        if sub.id in self.s.webhooks:
            raise AlreadyExists("the subscription exists")
        self.s.webhooks[sub.id] = sub

    def get_subscription(self, sub_id: str) -> Subscription | None:
        return self.s.webhooks.get(sub_id)

    def list_subscriptions(
        self,
        owner_id: str | None,
        *,
        enabled_only: bool = False,
        before_id: str | None = None,
        limit: int | None = 100,
    ) -> list[Subscription]:
        rows = [
            w
            for w in sorted(self.s.webhooks.values(), key=lambda w: w.id, reverse=True)
            if owner_id in (None, w.owner_id)
            and (w.enabled or not enabled_only)
            and (before_id is None or w.id < before_id)
        ]
        return rows if limit is None else rows[:limit]

    def update_subscription(self, sub_id: str, **changes: Any) -> Subscription | None:
        sub = self.s.webhooks.get(sub_id)
        if sub is None:
            return None
        self.s.webhooks[sub_id] = dataclasses.replace(sub, **changes)
        return self.s.webhooks[sub_id]

    def delete_subscription(self, sub_id: str) -> bool:
        gone = {k for k, d in self.s.deliveries.items() if d.subscription_id == sub_id}
        self.s.deliveries = {k: d for k, d in self.s.deliveries.items() if k not in gone}
        self.s.attempts = {k: a for k, a in self.s.attempts.items() if k[0] not in gone}
        return self.s.webhooks.pop(sub_id, None) is not None

    # -- deliveries -----------------------------------------------------------------------
    def add_deliveries(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            if d.subscription_id not in self.s.webhooks:
                raise NotFound(REFERENCE_GONE)
            if d.id in self.s.deliveries:
                raise AlreadyExists("the delivery exists")
            self.s.deliveries[d.id] = d

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        return self.s.deliveries.get(delivery_id)

    def list_deliveries(
        self, subscription_id: str, *, before_id: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        rows = [
            d
            for d in sorted(self.s.deliveries.values(), key=lambda d: d.id, reverse=True)
            if d.subscription_id == subscription_id and (before_id is None or d.id < before_id)
        ]
        return rows[:limit]

    def _due(self) -> list[Delivery]:
        return sorted(
            (
                d
                for d in self.s.deliveries.values()
                if d.state is DeliveryState.PENDING
                and d.next_attempt_at is not None
                and self.s.webhooks[d.subscription_id].enabled
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )

    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        found = [
            d for d in self._due() if d.next_attempt_at is not None and d.next_attempt_at <= now
        ]
        found = found[:limit]
        for d in found:
            self.s.deliveries[d.id] = dataclasses.replace(d, next_attempt_at=lease_until)
        return found

    def next_delivery_due(self) -> datetime | None:
        due = self._due()
        return due[0].next_attempt_at if due else None

    def update_delivery(self, delivery_id: str, **changes: Any) -> None:
        d = self.s.deliveries.get(delivery_id)
        if d is not None:
            self.s.deliveries[delivery_id] = dataclasses.replace(d, **changes)

    # -- attempts -------------------------------------------------------------------------
    def add_attempts(self, attempts: list[Attempt]) -> None:
        for a in attempts:
            if (a.delivery_id, a.number) in self.s.attempts:
                raise AlreadyExists("an attempt with that number exists")
            self.s.attempts[(a.delivery_id, a.number)] = a

    def list_attempts(self, delivery_ids: list[str]) -> list[Attempt]:
        wanted = set(delivery_ids)
        return [a for k, a in sorted(self.s.attempts.items()) if k[0] in wanted]
