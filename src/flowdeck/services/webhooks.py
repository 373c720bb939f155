"""Webhooks: subscriptions (their owner's, checked against the SSRF rules), the outbox
hook that turns each matching event into a delivery in the event's own transaction, the
delivery log and redelivery.  Sending is the dispatcher's (:mod:`flowdeck.runtime.webhooks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.events import matches
from flowdeck.domain.privilege import Access, Actor
from flowdeck.domain.runs import Event
from flowdeck.domain.webhooks import (
    PATTERN,
    Attempt,
    Delivery,
    DeliveryState,
    Subscription,
    new_secret,
)
from flowdeck.errors import InvalidInput, NotFound, StoreUnavailable
from flowdeck.ids import new_id
from flowdeck.security import ssrf
from flowdeck.store.base import Store, Tx

if TYPE_CHECKING:
    from flowdeck.runtime.webhooks import Dispatcher

MAX_PATTERNS = 20
MAX_SUBSCRIPTIONS = 100  # per user
WAKE_LIMIT = 10_000
RELOAD_S = 5.0  # other servers on the same database may change subscriptions


@dataclass
class _Index:
    """The enabled subscriptions, by the run they follow or by their owner."""

    version: int
    loaded_at: float
    by_run: dict[str, list[Subscription]] = field(default_factory=dict)
    by_owner: dict[str, list[Subscription]] = field(default_factory=dict)

    @classmethod
    def of(cls, subs: list[Subscription], version: int) -> _Index:
        index = cls(version, clock.monotonic())
        for sub in subs:
            if sub.run_id is not None:
                index.by_run.setdefault(sub.run_id, []).append(sub)
            else:
                index.by_owner.setdefault(sub.owner_id, []).append(sub)
        return index

    @property
    def empty(self) -> bool:
        return not self.by_run and not self.by_owner

    def matching(self, event: Event) -> list[Subscription]:
        found: list[Subscription] = []
        if event.subject_kind == "run":
            found.extend(self.by_run.get(event.subject_id, ()))
        if event.owner_id is not None:
            found.extend(self.by_owner.get(event.owner_id, ()))
        return [s for s in found if matches(s.events, event.type)]


def payload(event: Event) -> str:
    """The JSON body of every delivery of an event."""
    at = _iso(event.at)
    data: dict[str, Any] = {
        "id": event.id,
        "subject_kind": event.subject_kind,
        "subject_id": event.subject_id,
        "seq": event.seq,
        "type": event.type,
        "at": at,
        "actor": event.actor,
        "data": event.data,
    }
    if event.subject_kind == "run":
        data["run_id"] = event.subject_id
    body = {"type": event.type, "timestamp": at, "data": data}
    return json.dumps(body, separators=(",", ":"), default=str)


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


class Webhooks:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.allow = ssrf.networks(settings.webhook_allow_networks)
        self.dispatcher: Dispatcher | None = None
        # with the scheduler in a process of its own: its service wakes the API process's
        # dispatcher, and the API process tells it when subscriptions changed
        self.wake_elsewhere: Callable[[], None] | None = None
        self.changed_elsewhere: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._version = 0
        self._index: _Index | None = None
        # subscriptions added by a transaction not yet committed: its own events match them
        self._in_tx: weakref.WeakKeyDictionary[Tx, list[Subscription]] = weakref.WeakKeyDictionary()
        self._wake_at: set[int] = set()  # the last event id of each outbox-writing transaction

    def install(self) -> None:
        """Write the outbox in every event-writing transaction; wake the dispatcher after."""
        self.store.add_event_hook(self.on_events)
        self.store.add_commit_listener(self.on_commit)

    # -- the outbox -----------------------------------------------------------------------
    def changed(self) -> None:
        """Subscriptions changed: the next event-writing transaction reloads them."""
        self.changed_here()
        if self.changed_elsewhere is not None:
            self.changed_elsewhere()
        # other servers of the database reload theirs (else within RELOAD_S anyway)
        with contextlib.suppress(StoreUnavailable):
            self.store.announce("webhooks")

    def changed_here(self) -> None:
        with self._lock:
            self._version += 1

    def _enabled(self, tx: Tx) -> _Index:
        with self._lock:
            index, version = self._index, self._version
        if (
            index is not None
            and index.version == version
            and clock.monotonic() - index.loaded_at < RELOAD_S
        ):
            return index
        index = _Index.of(tx.list_subscriptions(None, enabled_only=True, limit=None), version)
        with self._lock:
            if self._version == version:
                self._index = index
        return index

    def on_events(self, tx: Tx, events: list[Event]) -> None:
        """The event hook: a pending delivery for each (event, matching subscription)."""
        index = self._enabled(tx)
        extra = self._in_tx.get(tx)
        if index.empty and not extra:
            return
        local = _Index.of(extra, 0) if extra else None
        now = clock.now()
        deadline = now + timedelta(seconds=self.settings.webhook_max_age_s)
        deliveries: list[Delivery] = []
        for event in events:
            subs = index.matching(event) + (local.matching(event) if local else [])
            if not subs:
                continue
            body = payload(event)
            # the index may have been read in this transaction, with its new subscriptions
            for sub in {s.id: s for s in subs}.values():
                deliveries.append(
                    Delivery(
                        new_id("msg"),
                        sub.id,
                        event.id,
                        event.type,
                        body,
                        DeliveryState.PENDING,
                        0,
                        now,
                        now,
                        deadline,
                        self.settings.webhook_max_attempts,
                    )
                )
        if deliveries:
            tx.add_deliveries(deliveries)
            with self._lock:
                if len(self._wake_at) >= WAKE_LIMIT:  # ids of rolled-back transactions
                    self._wake_at.clear()
                self._wake_at.add(events[-1].id)

    def on_commit(self, events: list[Event]) -> None:
        """The commit listener: wake the dispatcher once a transaction that wrote
        deliveries is committed (its last event handed on, in whichever thread)."""
        if not self._wake_at:
            return
        with self._lock:
            hits = [e.id for e in events if e.id in self._wake_at]
            self._wake_at.difference_update(hits)
        if hits:
            self.wake()

    def wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        elif self.wake_elsewhere is not None:
            self.wake_elsewhere()

    # -- subscriptions --------------------------------------------------------------------
    def _check(self, url: str, events: list[str]) -> None:
        ssrf.check_at_creation(url, self.allow)
        if not events:
            raise InvalidInput("give at least one event pattern, e.g. 'run.*'", field="events")
        if len(events) > MAX_PATTERNS:
            raise InvalidInput(f"at most {MAX_PATTERNS} event patterns", field="events")
        for pattern in events:
            if len(pattern) > 64 or not PATTERN.fullmatch(pattern):
                raise InvalidInput(
                    f"invalid event pattern {pattern!r}: dotted names with '*' "
                    "(run.*, step.failed, *)",
                    field="events",
                )

    def _new(self, actor: Actor, url: str, events: list[str], run_id: str | None) -> Subscription:
        self._check(url, events)
        now = clock.now()
        return Subscription(
            new_id("wh"),
            actor.user_id,
            url,
            list(dict.fromkeys(events)),
            run_id,
            True,
            new_secret(),
            now,
            now,
        )

    def _room(self, tx: Tx, actor: Actor, n: int) -> None:
        mine = tx.list_subscriptions(actor.user_id, limit=MAX_SUBSCRIPTIONS + 1)
        if len(mine) + n > MAX_SUBSCRIPTIONS:
            raise InvalidInput(f"at most {MAX_SUBSCRIPTIONS} webhooks per user")

    def create(
        self, actor: Actor, url: str, events: list[str], run_id: str | None = None
    ) -> Subscription:
        """A subscription to one run the caller may change, or to all the caller's runs;
        the returned value holds the secret (shown once)."""
        from flowdeck.services.runs import Runs

        sub = self._new(actor, url, events, run_id)
        with self.store.write() as tx:
            if run_id is not None:
                Runs._load(tx, actor, run_id, Access.WRITE)
            self._room(tx, actor, 1)
            tx.add_subscription(sub)
        self.changed()
        return sub

    def callbacks(self, actor: Actor, items: list[tuple[str, list[str]]]) -> list[Subscription]:
        """Checked subscriptions for a run about to be made (``run_id`` filled in by
        :meth:`add_to_run`)."""
        return [self._new(actor, url, events, None) for url, events in items]

    def add_to_run(self, tx: Tx, actor: Actor, run_id: str, subs: list[Subscription]) -> None:
        """Add callbacks in the transaction that makes their run, before its events."""
        self._room(tx, actor, len(subs))
        added = [_with_run(s, run_id) for s in subs]
        for sub in added:
            tx.add_subscription(sub)
        self._in_tx[tx] = added

    def _load(self, tx: Tx, actor: Actor, sub_id: str) -> Subscription:
        sub = tx.get_subscription(sub_id)
        if sub is None or not (actor.is_admin or sub.owner_id == actor.user_id):
            raise NotFound(f"no webhook {sub_id}")
        return sub

    def get(self, actor: Actor, sub_id: str) -> Subscription:
        with self.store.read() as tx:
            return self._load(tx, actor, sub_id)

    def subscriptions(self, actor: Actor, *, before: str | None, limit: int) -> list[Subscription]:
        """The caller's subscriptions (an admin's: everyone's), newest first."""
        owner = None if actor.is_admin else actor.user_id
        with self.store.read() as tx:
            return tx.list_subscriptions(owner, before_id=before, limit=limit)

    def update(
        self,
        actor: Actor,
        sub_id: str,
        *,
        enabled: bool | None = None,
        events: list[str] | None = None,
        url: str | None = None,
    ) -> Subscription:
        with self.store.write() as tx:
            sub = self._load(tx, actor, sub_id)
            changes: dict[str, Any] = {"updated_at": clock.now()}
            if events is not None or url is not None:
                self._check(url or sub.url, events if events is not None else sub.events)
            if events is not None:
                changes["events"] = list(dict.fromkeys(events))
            if url is not None:
                changes["url"] = url
            if enabled is not None:
                changes["enabled"] = enabled
                changes["disabled_reason"] = None if enabled else f"disabled by {actor.username}"
            updated = tx.update_subscription(sub.id, **changes)
            assert updated is not None
        self.changed()
        if enabled:
            self.wake()  # its pending deliveries are due again
        return updated

    def delete(self, actor: Actor, sub_id: str) -> None:
        with self.store.write() as tx:
            sub = self._load(tx, actor, sub_id)
            tx.delete_subscription(sub.id)
        self.changed()

    def rotate_secret(self, actor: Actor, sub_id: str) -> Subscription:
        """A new secret; deliveries are signed with both for ``webhook_secret_overlap_s``."""
        with self.store.write() as tx:
            sub = self._load(tx, actor, sub_id)
            now = clock.now()
            updated = tx.update_subscription(
                sub.id,
                secret=new_secret(),
                previous_secret=sub.secret,
                previous_secret_until=now
                + timedelta(seconds=self.settings.webhook_secret_overlap_s),
                updated_at=now,
            )
            assert updated is not None
        self.changed()
        return updated

    # -- the delivery log -----------------------------------------------------------------
    def deliveries(
        self, actor: Actor, sub_id: str, *, before: str | None, limit: int
    ) -> list[tuple[Delivery, list[Attempt]]]:
        """Newest first, each with its attempts."""
        with self.store.read() as tx:
            sub = self._load(tx, actor, sub_id)
            found = tx.list_deliveries(sub.id, before_id=before, limit=limit)
            attempts: dict[str, list[Attempt]] = {}
            for a in tx.list_attempts([d.id for d in found]):
                attempts.setdefault(a.delivery_id, []).append(a)
        return [(d, attempts.get(d.id, [])) for d in found]

    def redeliver(self, actor: Actor, sub_id: str, delivery_id: str) -> Delivery:
        """Attempt a delivery again soon, with the same ``webhook-id`` (its retries start
        over)."""
        with self.store.write() as tx:
            sub = self._load(tx, actor, sub_id)
            found = tx.get_delivery(delivery_id)
            if found is None or found.subscription_id != sub.id:
                raise NotFound(f"webhook {sub_id} has no delivery {delivery_id}")
            now = clock.now()
            changes: dict[str, Any] = {
                "state": DeliveryState.PENDING,
                "next_attempt_at": now,
                "deadline": now + timedelta(seconds=self.settings.webhook_max_age_s),
                "give_up_after": found.attempts + self.settings.webhook_max_attempts,
                "finished_at": None,
            }
            tx.update_delivery(found.id, **changes)
            delivery = tx.get_delivery(found.id)
            assert delivery is not None
        self.wake()
        return delivery


def _with_run(sub: Subscription, run_id: str) -> Subscription:
    return dataclasses.replace(sub, run_id=run_id)
