"""A run's time in the queue travels with its `run.running` event (`data.queued_s`), and
the queue-wait metric is read from there: nothing is kept per queued run, and a run queued
before this server started is measured too."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flowdeck import clock
from flowdeck.domain.runs import Event
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.fake import FakeExecutor
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.services.metrics import Metrics
from flowdeck.store.fake import FakeStore
from tests.helpers import make_settings
from tests.unit.test_scheduler_window import T0, fill, succeeded, the_runs, wait_for


def test_each_run_started_from_the_queue_says_how_long_it_waited(tmp_path: Path) -> None:
    frozen = clock.FrozenClock(T0 + timedelta(hours=1))

    def one_second(_launch: Launch) -> Outcome:
        frozen.advance(1.0)
        return Outcome(exit_code=0)

    store = FakeStore()
    fill(store)
    runs = {r.id: r for r in the_runs()[:10]}
    with store.write() as tx:
        for run in runs.values():
            tx.add_run(run)  # queued before this scheduler started
    settings = make_settings(tmp_path, slots=1)
    with clock.use(frozen):
        sched = Scheduler(store, settings, {"local": FakeExecutor(auto=one_second)}, lambda _: 0)
        sched.start()
        try:
            wait_for(lambda: succeeded(store) == len(runs))
        finally:
            sched.close()
    with store.read() as tx:
        started = tx.list_events(types=["run.running"], limit=1000)
    assert sorted(e.subject_id for e in started) == sorted(runs)
    for e in started:
        queued_at = runs[e.subject_id].queued_at
        assert queued_at is not None
        assert e.data["queued_s"] == (e.at - queued_at).total_seconds()
        assert e.data["queued_s"] > 3000  # queued about an hour before the scheduler started


def wait_metric(m: Metrics) -> tuple[float, float]:
    """(count, sum) of flowdeck_queue_wait_seconds."""
    got = {s.name: s.value for f in m.registry.collect() for s in f.samples}
    return got["flowdeck_queue_wait_seconds_count"], got["flowdeck_queue_wait_seconds_sum"]


def event(i: int, kind: str, **data: object) -> Event:
    return Event(i, "run", "run_1", i, kind, T0 + timedelta(seconds=i), None, dict(data), "u")


def test_the_queue_wait_metric_comes_from_the_start_event_alone() -> None:
    m = Metrics(FakeStore())
    # started from the queue, its queueing never seen by this server (queued before it)
    m.on_commit([event(1, "run.running", **{"from": "queued", "queued_s": 2.5})])
    assert wait_metric(m) == (1.0, 2.5)
    # a resume, and an event of another kind: no queue wait
    m.on_commit([event(2, "run.paused", **{"from": "running"})])
    m.on_commit([event(3, "run.running", **{"from": "paused"})])
    assert wait_metric(m) == (1.0, 2.5)
