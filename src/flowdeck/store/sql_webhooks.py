"""The SQL store's webhook operations: subscriptions, the delivery outbox, attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.webhooks import SEALED, Attempt, Delivery, DeliveryState, Subscription
from flowdeck.errors import FlowdeckError
from flowdeck.store import schema as t
from flowdeck.store.base import Sealer

_SUB_FIELDS = [c.name for c in t.webhooks.c]
_DELIVERY_FIELDS = [c.name for c in t.webhook_deliveries.c]
_ENABLED = sa.select(t.webhooks.c.id).where(t.webhooks.c.enabled.is_(True))


# Signing secrets are kept encrypted (with the key of secret_key_file): SEALED + a Fernet
# token.  Rows written before that hold them in clear until the next start seals them.
_SECRETS = ("secret", "previous_secret")


def _open(value: str | None, sealer: Sealer | None) -> str | None:
    """The secret in clear; still sealed when no key of secret_key_file opens it (the
    subscription's deliveries then fail, saying so; nothing else does)."""
    if value is None or not value.startswith(SEALED) or sealer is None:
        return value
    try:
        return sealer.decrypt(value.removeprefix(SEALED))
    except FlowdeckError:
        return value


def _seal(value: str | None, sealer: Sealer | None) -> str | None:
    if value is None or sealer is None or value.startswith(SEALED):
        return value
    return SEALED + sealer.encrypt(value)


def _sub(row: Any, sealer: Sealer | None = None) -> Subscription:
    m = dict(row._mapping)
    for name in _SECRETS:
        m[name] = _open(m[name], sealer)
    return Subscription(**{f: m[f] for f in _SUB_FIELDS})


def _delivery(row: Any) -> Delivery:
    m = dict(row._mapping)
    m["state"] = DeliveryState(m["state"])
    return Delivery(**m)


def _delivery_values(d: Delivery) -> dict[str, Any]:
    values = {f: getattr(d, f) for f in _DELIVERY_FIELDS}
    values["state"] = d.state.value
    return values


def _changes(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, DeliveryState) else v) for k, v in changes.items()}


class SqlWebhooksMixin:
    conn: Connection
    dialect: str
    sealer: Sealer | None

    # -- subscriptions --------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        # Subscription's fields are the table's columns.
        values = {f: getattr(sub, f) for f in _SUB_FIELDS}
        for name in _SECRETS:
            values[name] = _seal(values[name], self.sealer)
        self.conn.execute(t.webhooks.insert().values(values))

    def get_subscription(self, sub_id: str) -> Subscription | None:
        row = self.conn.execute(t.webhooks.select().where(t.webhooks.c.id == sub_id)).first()
        return _sub(row, self.sealer) if row else None

    def seal_subscriptions(self, *, again: bool = False) -> int:
        w = t.webhooks.c
        q = sa.select(w.id, w.secret, w.previous_secret)
        if not again:
            q = q.where(
                sa.or_(
                    ~w.secret.startswith(SEALED),
                    sa.and_(w.previous_secret.is_not(None), ~w.previous_secret.startswith(SEALED)),
                )
            )
        rows = self.conn.execute(q).all()
        for row in rows:
            values = {name: _open(getattr(row, name), self.sealer) for name in _SECRETS}
            self.conn.execute(
                t.webhooks.update()
                .where(w.id == row.id)
                .values({k: _seal(v, self.sealer) for k, v in values.items()})
            )
        return len(rows)

    def list_subscriptions(
        self,
        owner_id: str | None,
        *,
        enabled_only: bool = False,
        before_id: str | None = None,
        limit: int | None = 100,
    ) -> list[Subscription]:
        w = t.webhooks.c
        q = t.webhooks.select().order_by(w.id.desc())
        if owner_id is not None:
            q = q.where(w.owner_id == owner_id)
        if enabled_only:
            q = q.where(w.enabled.is_(True))
        if before_id is not None:
            q = q.where(w.id < before_id)
        if limit is not None:
            q = q.limit(limit)
        return [_sub(row, self.sealer) for row in self.conn.execute(q)]

    def update_subscription(self, sub_id: str, **changes: Any) -> Subscription | None:
        for name in _SECRETS:
            if name in changes:
                changes[name] = _seal(changes[name], self.sealer)
        if changes:
            self.conn.execute(t.webhooks.update().where(t.webhooks.c.id == sub_id).values(changes))
        return self.get_subscription(sub_id)

    def delete_subscription(self, sub_id: str) -> bool:
        d = t.webhook_deliveries
        ids = sa.select(d.c.id).where(d.c.subscription_id == sub_id)
        self.conn.execute(
            t.webhook_attempts.delete().where(t.webhook_attempts.c.delivery_id.in_(ids))
        )
        self.conn.execute(d.delete().where(d.c.subscription_id == sub_id))
        return self.conn.execute(t.webhooks.delete().where(t.webhooks.c.id == sub_id)).rowcount > 0

    # -- deliveries -----------------------------------------------------------------------
    def add_deliveries(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            self.conn.execute(
                t.webhook_deliveries.insert(), [_delivery_values(d) for d in deliveries]
            )

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        d = t.webhook_deliveries
        row = self.conn.execute(d.select().where(d.c.id == delivery_id)).first()
        return _delivery(row) if row else None

    def list_deliveries(
        self, subscription_id: str, *, before_id: str | None = None, limit: int = 50
    ) -> list[Delivery]:
        d = t.webhook_deliveries.c
        q = t.webhook_deliveries.select().where(d.subscription_id == subscription_id)
        if before_id is not None:
            q = q.where(d.id < before_id)
        q = q.order_by(d.id.desc()).limit(limit)
        return [_delivery(row) for row in self.conn.execute(q)]

    def claim_deliveries(self, now: datetime, lease_until: datetime, limit: int) -> list[Delivery]:
        d = t.webhook_deliveries
        q = (
            d.select()
            .where(
                d.c.state == DeliveryState.PENDING.value,
                d.c.next_attempt_at <= now,
                d.c.subscription_id.in_(_ENABLED),
            )
            .order_by(d.c.next_attempt_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":  # several servers may share the database
            q = q.with_for_update(skip_locked=True)
        found = [_delivery(row) for row in self.conn.execute(q)]
        if found:
            self.conn.execute(
                d.update()
                .where(d.c.id.in_([x.id for x in found]))
                .values(next_attempt_at=lease_until)
            )
        return found

    def next_delivery_due(self) -> datetime | None:
        d = t.webhook_deliveries.c
        q = sa.select(sa.func.min(d.next_attempt_at)).where(
            d.state == DeliveryState.PENDING.value, d.subscription_id.in_(_ENABLED)
        )
        value: datetime | None = self.conn.execute(q).scalar_one_or_none()
        return value

    def update_delivery(self, delivery_id: str, **changes: Any) -> None:
        d = t.webhook_deliveries
        self.conn.execute(d.update().where(d.c.id == delivery_id).values(_changes(changes)))

    # -- attempts -------------------------------------------------------------------------
    def add_attempts(self, attempts: list[Attempt]) -> None:
        if attempts:
            self.conn.execute(
                t.webhook_attempts.insert(),
                [
                    {
                        "delivery_id": a.delivery_id,
                        "number": a.number,
                        "at": a.at,
                        "status": a.status,
                        "error": a.error,
                        "latency_ms": a.latency_ms,
                    }
                    for a in attempts
                ],
            )

    def list_attempts(self, delivery_ids: list[str]) -> list[Attempt]:
        if not delivery_ids:
            return []
        a = t.webhook_attempts.c
        q = (
            t.webhook_attempts.select()
            .where(a.delivery_id.in_(delivery_ids))
            .order_by(a.delivery_id, a.number)
        )
        return [Attempt(**dict(row._mapping)) for row in self.conn.execute(q)]
