"""The webhook dispatcher: one asyncio loop in its own thread sends the outbox's due
deliveries, at most ``webhook_concurrency`` at once, and records each attempt.

It is woken after each commit that wrote deliveries, by its own timer when the next retry
is due, and scans the outbox when it starts (so a restart loses nothing).  Each claimed
delivery is leased in the database (its next attempt moved past the timeout): a crash only
delays it.  At least once: a delivery succeeds on a 2xx answer; anything else is retried
with exponential backoff and full jitter, ``Retry-After`` honoured on 429 and 503, until
``webhook_max_attempts`` or ``webhook_max_age_s``; 410 disables the subscription.
Redirects are not followed.  Deliveries of one subscription are not ordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from standardwebhooks import Webhook

from flowdeck import __version__, clock
from flowdeck.config import Settings
from flowdeck.domain.webhooks import SEALED, Attempt, Delivery, DeliveryState, Subscription
from flowdeck.errors import FlowdeckError, UrlRefused
from flowdeck.security import ssrf
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck.webhooks")
# Retry jitter from a generator of its own: the module's shared one is the test
# frameworks' too (Hypothesis checks that nothing else moves it while it draws).
_JITTER = random.Random()  # noqa: S311 - jitter, not a secret

IDLE_S = 60.0  # look at the outbox at least this often
LEASE_MARGIN_S = 60.0
USER_AGENT = f"flowdeck-webhooks/{__version__}"


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery: Delivery
    at: datetime
    status: int | None
    error: str | None
    latency_ms: float
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


class SecretSealed(FlowdeckError):
    """The subscription's signing secret cannot be decrypted with the keys of secret_key_file (restore the key file this database was written with)."""  # noqa: E501


def signature(sub: Subscription, msg_id: str, at: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per signing secret."""
    secrets = sub.signing_secrets(at)
    if any(secret.startswith(SEALED) for secret in secrets):
        raise SecretSealed
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        on_disabled: Callable[[], None] = lambda: None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.allow = ssrf.networks(settings.webhook_allow_networks)
        self.on_disabled = on_disabled
        self.verify = verify
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closing = False
        self._wakeup: asyncio.Event | None = None
        self._results: list[Outcome] = []
        self._results_ready: asyncio.Event | None = None
        self._inflight: dict[asyncio.Task[None], Delivery] = {}
        # Observers of each attempt's outcome (metrics), called in the dispatcher's loop.
        self.outcome_observers: list[Callable[[Outcome], None]] = []

    # -- thread and loop ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="flowdeck-webhooks", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)

    def wake(self) -> None:
        """Look at the outbox now (thread-safe)."""
        loop, wakeup = self.loop, self._wakeup
        if loop is None or wakeup is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended
            loop.call_soon_threadsafe(wakeup.set)

    def close(self) -> None:
        """Stop sending: attempts in flight are abandoned (their deliveries stay pending,
        due at once), recorded attempts are committed."""
        self._closing = True
        self.wake()
        if self._thread is not None:
            self._thread.join(30)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._results_ready = asyncio.Event()
        limit = self.settings.webhook_concurrency
        client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.settings.webhook_timeout_s,
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            trust_env=False,  # a proxy from the environment would bypass the address checks
            verify=self.verify,
        )
        recorder = asyncio.create_task(self._recorder())
        try:
            await self._dispatch(client, limit)
        finally:
            self._ready.set()
            abandoned = list(self._inflight.values())
            for task in self._inflight:
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            self._results_ready.set()
            await recorder
            if abandoned:
                await asyncio.to_thread(self._release, abandoned)
            await client.aclose()

    async def _dispatch(self, client: httpx.AsyncClient, limit: int) -> None:
        assert self._wakeup is not None
        while not self._closing:
            self._wakeup.clear()
            wait_s = IDLE_S
            free = limit - len(self._inflight)
            if free > 0:
                try:
                    claimed, next_due = await asyncio.to_thread(self._claim, free)
                except Exception:
                    log.exception("could not read the webhook outbox")
                    claimed, next_due = [], None
                # Started once the outbox was looked at: what is queued after start()
                # returns goes out when its event is handed on (wake), not by chance.
                self._ready.set()
                for delivery, sub in claimed:
                    task = asyncio.create_task(self._attempt(client, delivery, sub))
                    self._inflight[task] = delivery
                    task.add_done_callback(self._done)
                if next_due is not None:
                    wait_s = min(wait_s, (next_due - clock.now()).total_seconds())
                if not claimed:  # due but held by another server's claim: do not spin
                    wait_s = max(wait_s, 0.05)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if self._wakeup is not None:
            self._wakeup.set()

    # -- the outbox -----------------------------------------------------------------------
    def _claim(self, limit: int) -> tuple[list[tuple[Delivery, Subscription]], datetime | None]:
        now = clock.now()
        lease = timedelta(seconds=self.settings.webhook_timeout_s + LEASE_MARGIN_S)
        with self.store.write() as tx:
            found = tx.claim_deliveries(now, now + lease, limit)
            subs: dict[str, Subscription | None] = {}
            for d in found:
                if d.subscription_id not in subs:
                    subs[d.subscription_id] = tx.get_subscription(d.subscription_id)
            next_due = tx.next_delivery_due()
        claimed = [(d, sub) for d in found if (sub := subs[d.subscription_id]) is not None]
        return claimed, next_due

    def _release(self, deliveries: list[Delivery]) -> None:
        """Deliveries whose attempt was abandoned are due again at once."""
        now = clock.now()
        with self.store.write() as tx:
            for d in deliveries:
                current = tx.get_delivery(d.id)
                if current is not None and current.state is DeliveryState.PENDING:
                    tx.update_delivery(d.id, next_attempt_at=now)

    # -- one attempt ----------------------------------------------------------------------
    async def _attempt(self, client: httpx.AsyncClient, d: Delivery, sub: Subscription) -> None:
        started = clock.monotonic()
        at = clock.now()
        status: int | None = None
        error: str | None = None
        wait: float | None = None
        try:
            target = ssrf.parse(sub.url)
            address = ssrf.check_addresses(target, await self._resolve(target), self.allow)
            headers = {
                "host": target.host_header,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": d.id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signature(sub, d.id, at, d.payload),
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            async with client.stream(
                "POST",
                target.url_for(address),
                content=d.payload.encode(),
                headers=headers,
                extensions=extensions,
            ) as response:
                status = response.status_code
                if 300 <= status < 400:
                    where = response.headers.get("location", "?")
                    error = f"HTTP {status}: redirect to {where[:200]} not followed"
                elif not 200 <= status < 300:
                    error = f"HTTP {status}"
                if status in (429, 503):
                    wait = retry_after(response.headers.get("retry-after"), at)
        except UrlRefused as exc:
            error = str(exc.details.get("reason", exc.message))
        except SecretSealed as exc:
            error = exc.message
        except httpx.TimeoutException:
            error = f"no answer within {self.settings.webhook_timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        except Exception as exc:  # never lose the outcome of an attempt
            log.exception("webhook delivery %s failed unexpectedly", d.id)
            error = f"internal error: {type(exc).__name__}"
        latency = (clock.monotonic() - started) * 1000
        outcome = Outcome(d, at, status, error, round(latency, 3), wait)
        self._results.append(outcome)
        for observe in self.outcome_observers:
            observe(outcome)
        if self._results_ready is not None:
            self._results_ready.set()

    async def _resolve(self, target: ssrf.Target) -> list[str]:
        literal = ssrf.literal_addresses(target.host)
        if literal is not None:
            return literal
        assert self.loop is not None
        try:
            infos = await self.loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    # -- recording ------------------------------------------------------------------------
    async def _recorder(self) -> None:
        """Group commit: every outcome gathered meanwhile in one transaction."""
        assert self._results_ready is not None
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            batch, self._results = self._results, []
            if batch:
                try:
                    disabled = await asyncio.to_thread(self._record, batch)
                except Exception:  # the leases expire: the deliveries are attempted again
                    log.exception("could not record %d webhook attempts", len(batch))
                else:
                    if disabled:
                        self.on_disabled()
            if self._closing and not self._inflight and not self._results:
                return

    def _next_attempt(self, o: Outcome, number: int) -> datetime:
        if o.retry_after_s is not None:
            return o.at + timedelta(seconds=o.retry_after_s)
        s = self.settings
        cap = min(s.webhook_retry_max_s, s.webhook_retry_base_s * 2 ** min(number - 1, 60))
        return o.at + timedelta(seconds=_JITTER.uniform(0, cap))

    def _record(self, batch: list[Outcome]) -> bool:
        """Store the attempts and each delivery's new state; True if a subscription was
        disabled (410)."""
        disabled = False
        now = clock.now()
        attempts: list[Attempt] = []
        with self.store.write() as tx:
            for o in batch:
                current = tx.get_delivery(o.delivery.id)
                if current is None:  # its subscription was deleted meanwhile
                    continue
                number = current.attempts + 1
                attempts.append(Attempt(current.id, number, o.at, o.status, o.error, o.latency_ms))
                changes: dict[str, object] = {
                    "attempts": number,
                    "last_status": o.status,
                    "last_error": o.error,
                }
                done = {"next_attempt_at": None, "finished_at": now}
                if current.state is DeliveryState.SUCCEEDED:
                    pass  # a concurrent redelivery already succeeded
                elif o.ok:
                    changes |= {"state": DeliveryState.SUCCEEDED, **done}
                elif o.gone:
                    changes |= {"state": DeliveryState.FAILED, **done}
                    tx.update_subscription(
                        current.subscription_id,
                        enabled=False,
                        disabled_reason="the receiver answered 410 Gone",
                        updated_at=now,
                    )
                    disabled = True
                else:
                    next_at = self._next_attempt(o, number)
                    if number >= current.give_up_after or next_at > current.deadline:
                        changes |= {"state": DeliveryState.FAILED, **done}
                    else:
                        changes["next_attempt_at"] = next_at
                tx.update_delivery(current.id, **changes)
            tx.add_attempts(attempts)
        return disabled
