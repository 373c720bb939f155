"""Prometheus metrics of one server (``GET /metrics``), on its own registry.

Three sources:

- the store, read at each scrape through indexes that touch only active runs: runs in
  each active state, queue depth and the age of the oldest queued run, running steps; the
  counts of finished runs (a scan of every run) are refreshed at most every
  ``FINISHED_TTL_S`` seconds;
- committed events (a commit listener): queue wait (``run.queued`` to ``run.running``),
  step durations (``step.running`` to the step's end), finished runs;
- the parts of this process: scheduler tick time and slots, webhook attempts, event-stream
  clients, and HTTP latency by route template (see :mod:`flowdeck.api.observability`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowdeck import clock
from flowdeck.domain.runs import ACTIVE_STATES, TERMINAL_STATES, Event, RunState
from flowdeck.store.base import Store

if TYPE_CHECKING:
    from flowdeck.events.bus import EventBus
    from flowdeck.runtime.scheduler import SchedulerHandle
    from flowdeck.runtime.webhooks import Dispatcher, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINISHED_TTL_S = 60.0
STEP_ENDS = frozenset(
    {
        "step.succeeded",
        "step.failed",
        "step.timed_out",
        "step.cancelled",
        "step.killed",
        "step.lost",
    }
)
RUN_ENDS = frozenset(f"run.{s.value}" for s in TERMINAL_STATES)
_PENDING_LIMIT = 100_000  # starts remembered while waiting for their ends, at most

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class _StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._finished: dict[RunState, int] = {}
        self._stored: dict[str, int] = {}  # bytes stored by username
        self._finished_at = float("-inf")
        self._lock = threading.Lock()

    def finished(self, state: RunState) -> None:
        """A run of this server just finished: count it before the next refresh."""
        with self._lock:
            if self._finished_at != float("-inf"):
                self._finished[state] = self._finished.get(state, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            refresh = time.monotonic() - self._finished_at > FINISHED_TTL_S
            with self.store.read() as tx:
                active = tx.count_runs_in(sorted(ACTIVE_STATES))
                if refresh:
                    self._finished = tx.count_runs_in(sorted(TERMINAL_STATES))
                    stored = tx.stored_bytes_by_owner()
                    names = {u.id: u.username for u in tx.list_users()} if stored else {}
                    self._stored = {names.get(k, k): v for k, v in stored.items()}
                    self._finished_at = time.monotonic()
                steps = tx.count_running_steps()
                oldest = tx.oldest_queued_at()
            finished = dict(self._finished)
            stored_by_user = dict(self._stored)
        runs = GaugeMetricFamily(
            "flowdeck_runs",
            "Runs in each state (finished states re-read from the store every minute).",
            labels=["state"],
        )
        for state in RunState:
            runs.add_metric([state.value], (active | finished).get(state, 0))
        yield runs
        yield GaugeMetricFamily(
            "flowdeck_queue_depth",
            "Runs queued, waiting for slots.",
            active.get(RunState.QUEUED, 0),
        )
        age = (clock.now() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "flowdeck_queue_oldest_seconds", "How long the oldest queued run has waited.", age
        )
        yield GaugeMetricFamily("flowdeck_steps_running", "Steps running, of every run.", steps)
        per_user = GaugeMetricFamily(
            "flowdeck_user_stored_bytes",
            "Bytes of each user's uploads and products (re-read every minute).",
            labels=["user"],
        )
        for user, n in sorted(stored_by_user.items()):
            per_user.add_metric([user], n)
        yield per_user
        yield GaugeMetricFamily(
            "flowdeck_stored_bytes",
            "Bytes of all users' uploads and products (re-read every minute).",
            sum(stored_by_user.values()),
        )


class Metrics:
    """The registry and the metrics a server updates."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._store = _StoreCollector(store)
        self.registry.register(self._store)
        self.queue_wait = Histogram(
            "flowdeck_queue_wait_seconds",
            "From a run's queueing to its start.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "flowdeck_step_duration_seconds",
            "Running time of each step attempt, by the state it ended in.",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.runs_finished = Counter(
            "flowdeck_runs_finished",
            "Runs that reached a terminal state (since this server started).",
            ["state"],
            registry=r,
        )
        self.tick = Histogram(
            "flowdeck_scheduler_tick_seconds",
            "Time of each scheduler loop iteration (tick).",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.slots_total = Gauge("flowdeck_slots_total", "CPU slots of this server.", registry=r)
        self.slots_used = Gauge(
            "flowdeck_slots_used", "CPU slots in use on this server.", registry=r
        )
        self.webhook_attempts = Counter(
            "flowdeck_webhook_attempts",
            "Webhook delivery attempts, by result (success: a 2xx answer).",
            ["result"],
            registry=r,
        )
        self.sse_clients = Gauge(
            "flowdeck_sse_clients", "Event-stream (SSE) clients connected.", registry=r
        )
        self.http = Histogram(
            "flowdeck_http_request_duration_seconds",
            "HTTP request latency by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        # labelled children by (metric, labels): ``labels()`` validates and locks each call
        self._children: dict[tuple[Any, ...], Any] = {}
        self._started: dict[tuple[str, Any, Any, Any], datetime] = {}
        self._lock = threading.Lock()

    # -- wiring ---------------------------------------------------------------------------
    def watch_bus(self, bus: EventBus) -> None:
        self.sse_clients.set_function(lambda: bus.subscribers)

    def watch_scheduler(self, scheduler: SchedulerHandle) -> None:
        scheduler.tick_observers.append(self.tick.observe)
        self.slots_total.set_function(lambda: scheduler.slots)
        self.slots_used.set_function(lambda: scheduler.used)

    def watch_dispatcher(self, dispatcher: Dispatcher) -> None:
        dispatcher.outcome_observers.append(self._on_outcome)

    def _on_outcome(self, outcome: Outcome) -> None:
        self._child(self.webhook_attempts, "success" if outcome.ok else "failure").inc()

    # -- events ---------------------------------------------------------------------------
    def on_commit(self, events: list[Event]) -> None:
        """A commit listener: times between events of the same run or step."""
        with self._lock:
            for e in events:
                if e.subject_kind == "run":
                    self._on_event(e)

    def _on_event(self, e: Event) -> None:
        kind = e.type
        if kind == "run.running":
            waited = e.data.get("queued_s")  # (admitted from the queue; not on a resume)
            if isinstance(waited, int | float) and not isinstance(waited, bool):
                self.queue_wait.observe(max(0.0, float(waited)))
        elif kind in RUN_ENDS:
            self._child(self.runs_finished, kind[4:]).inc()
            self._store.finished(RunState(kind[4:]))
        elif kind == "step.running":
            if len(self._started) >= _PENDING_LIMIT:
                self._started.clear()
            self._started[self._step_key(e)] = e.at
        elif kind in STEP_ENDS:
            started = self._started.pop(self._step_key(e), None)
            if started is not None:
                seconds = max(0.0, (e.at - started).total_seconds())
                self._child(self.step_duration, kind[5:]).observe(seconds)

    @staticmethod
    def _step_key(e: Event) -> tuple[str, Any, Any, Any]:
        return (e.subject_id, e.data.get("step"), e.data.get("index"), e.data.get("attempt"))

    # -- exposition -----------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self._child(self.http, method, route, str(status)).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
