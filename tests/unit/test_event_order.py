"""Events committed by two processes reach the listeners once each, in id order: a late
event is waited for, a missing one is read from the store, one never committed is skipped."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

from flowdeck.domain.runs import Event
from flowdeck.events.order import EventOrder

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(i: int) -> Event:
    return Event(i, "run", f"run_{i % 3}", i, "run.running", T0, None, {}, "u1")


class Listener:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.done = threading.Event()

    def __call__(self, events: list[Event]) -> None:
        self.ids += [e.id for e in events]
        if self.ids and self.ids[-1] >= 100:
            self.done.set()


def test_interleaved_senders_are_handed_on_in_id_order_without_reading_the_store() -> None:
    got = Listener()
    reads: list[tuple[int, int]] = []
    order = EventOrder(got, lambda a, b: reads.append((a, b)) or [], last_id=0, wait_s=5)
    try:
        # two senders, each in its own order, batches crossing each other
        ours = [ev(i) for i in range(1, 101) if i % 3]
        theirs = [ev(i) for i in range(1, 101) if not i % 3]
        rng = random.Random(7)
        batches = [ours[i : i + 4] for i in range(0, len(ours), 4)] + [
            theirs[i : i + 2] for i in range(0, len(theirs), 2)
        ]
        rng.shuffle(batches)
        threads = [threading.Thread(target=order.offer, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        order.offer([ev(5), ev(50)])  # repeated: dropped
        assert got.done.wait(5)
        assert got.ids == list(range(1, 101))
        assert reads == []
    finally:
        order.close()


def test_a_gap_is_read_from_the_store_and_what_it_lacks_is_skipped() -> None:
    got = Listener()
    stored = {2: ev(2), 4: ev(4)}  # 3 was never committed (a rolled-back transaction)
    reads: list[tuple[int, int]] = []

    def fetch(first: int, end: int) -> list[Event]:
        reads.append((first, end))
        return [stored[i] for i in range(first, end) if i in stored]

    order = EventOrder(got, fetch, last_id=0, wait_s=0.02)
    try:
        order.offer([ev(1)])
        order.offer([ev(5)])  # 2-4 committed elsewhere, not told (yet)
        assert got.ids == [1]  # waits rather than jump ahead
        deadline = time.monotonic() + 5
        while got.ids[-1] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got.ids == [1, 2, 4, 5]
        assert reads[0] == (2, 5)
        order.offer([ev(3)])  # the late copy of what was skipped: never handed on
        order.offer([ev(i) for i in range(6, 101)])
        assert got.done.wait(5)
        assert got.ids == [1, 2, 4, *range(5, 101)]
    finally:
        order.close()


def test_events_another_server_committed_are_read_once_when_it_says_so() -> None:
    """``reach(n)`` (a PostgreSQL notification from another server): the events up to
    ``n`` not handed on yet are read from the store, once; ones already known are not."""
    got = Listener()
    stored = {i: ev(i) for i in range(1, 11) if i != 4}  # 4 was rolled back
    reads: list[tuple[int, int]] = []

    def fetch(first: int, end: int) -> list[Event]:
        reads.append((first, end))
        return [stored[i] for i in range(first, end) if i in stored]

    order = EventOrder(got, fetch, last_id=0, wait_s=0.01)
    try:
        order.offer([ev(1), ev(2)])  # this server's own
        order.reach(2)  # nothing new: no read
        assert reads == []
        order.reach(10)
        deadline = time.monotonic() + 5
        while got.ids[-1:] != [10] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got.ids == [1, 2, 3, 5, 6, 7, 8, 9, 10]
        assert reads[0] == (3, 11)
        order.reach(10)  # said again: nothing more
        assert got.ids == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    finally:
        order.close()
