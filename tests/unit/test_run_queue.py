"""The scheduler's queue admits by priority, then age, whatever left it meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flowdeck.domain.runs import Run, RunState
from flowdeck.runtime.run_queue import RunQueue

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def run(run_id: str, minute: int, priority: int = 0) -> Run:
    at = T0 + timedelta(minutes=minute)
    return Run(
        run_id, "u", "wf", "u/wf@1", RunState.QUEUED, at, at, priority=priority, queued_at=at
    )


def test_runs_are_taken_by_priority_then_age_and_removals_are_respected() -> None:
    q = RunQueue()
    for r in [run("a", 3), run("b", 1), run("c", 2, priority=5), run("d", 0), run("e", 4)]:
        q[r.id] = r
    del q["d"]  # stopped while queued
    assert [r.id for r in q.take_first(2)] == ["c", "b"]
    assert set(q) == {"a", "e"}
    q["b"] = run("b", 1)  # claimed but no slot: queued again
    assert [r.id for r in q.take_first(10)] == ["b", "a", "e"]
    assert not q
    assert q.take_first(1) == []


def test_a_long_queue_stays_ordered_after_many_removals() -> None:
    q = RunQueue()
    for i in range(3000):
        q[f"r{i:05d}"] = run(f"r{i:05d}", i)
    for i in range(0, 3000, 2):
        q.pop(f"r{i:05d}")
    taken = [r.id for r in q.take_first(3000)]
    assert taken == [f"r{i:05d}" for i in range(1, 3000, 2)]


def test_a_window_holds_each_owners_first_runs_and_marks_the_rest_in_the_store() -> None:
    q = RunQueue(window=4)
    for i in (5, 3, 7, 1):
        assert q.hold(run(f"r{i}", i))
    assert not q.hold(run("r9", 9))  # after the worst held: left to the store
    assert q.more == {"u"} and not q.low
    assert q.hold(run("r0", 0))  # before it: held, the worst (r7) goes to the store
    assert [r.id for r in q.of("u")] == ["r0", "r1", "r3", "r5"] and "r7" not in q
    assert q.take("u") is not None and q.gone == {"r0"}
    del q["r3"]
    assert not q.low  # 2 of 4 held: half a window
    assert q.pop("r5").id == "r5"
    assert q.low == {"u"}  # under half a window, more in the store: to read again
    assert q.gone == {"r0", "r3", "r5"}
    q.hold(run("r3", 3))  # held again (a failed admission): not gone any more
    assert q.gone == {"r0", "r5"}
