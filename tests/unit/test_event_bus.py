"""The event bus and event type patterns."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from flowdeck.domain.events import check_patterns, matcher
from flowdeck.domain.runs import Event
from flowdeck.errors import InvalidInput
from flowdeck.events.bus import BusClosed, LocalEventBus, SlowSubscriber

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(i: int, type_: str = "run.running", owner: str = "u1") -> Event:
    return Event(i, "run", f"run_{i % 3}", i, type_, T0, None, {}, owner)


def test_patterns_match_whole_types_with_star_as_any_characters() -> None:
    m = matcher(["run.*", "step.failed"])
    assert m("run.queued") and m("step.failed")
    assert not m("step.failed2") and not m("xrun.queued") and not m("step.running")
    assert matcher([])("anything")
    assert matcher(["*"])("product.created")
    assert matcher(["step_*"])("step_x") and not matcher(["step_*"])("stepx")


@pytest.mark.parametrize("bad", ["Run.*", "run.queued!", "", "x" * 65, "run queued"])
def test_bad_patterns_are_named(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_patterns([bad])
    assert repr(bad) in info.value.message


def test_subscribers_receive_what_they_accept_in_order_from_any_thread() -> None:
    async def main() -> list[int]:
        bus = LocalEventBus()
        sub = bus.subscribe(lambda e: e.owner_id == "u1", maxsize=100)
        other = bus.subscribe(lambda e: True, maxsize=100)
        publisher = threading.Thread(
            target=lambda: [bus.publish([ev(i, owner="u1" if i % 2 else "u2")]) for i in range(10)]
        )
        publisher.start()
        got: list[int] = []
        while len(got) < 5:
            got += [e.id for e in await sub.next_batch()]
        publisher.join()
        assert bus.subscribers == 2
        bus.unsubscribe(sub)
        bus.unsubscribe(other)
        assert bus.subscribers == 0
        return got

    assert asyncio.run(main()) == [1, 3, 5, 7, 9]


def test_a_slow_subscriber_is_cut_off_and_never_blocks_the_publisher() -> None:
    async def main() -> None:
        bus = LocalEventBus()
        slow = bus.subscribe(lambda e: True, maxsize=10)
        fast = bus.subscribe(lambda e: True, maxsize=1000)
        bus.publish([ev(i) for i in range(1, 26)])  # returns at once
        await asyncio.sleep(0)  # the loop delivers
        assert len(await fast.next_batch()) == 25
        with pytest.raises(SlowSubscriber):
            await slow.next_batch()

    asyncio.run(main())


def test_closing_the_bus_ends_waiting_subscribers() -> None:
    async def main() -> None:
        bus = LocalEventBus()
        sub = bus.subscribe(lambda e: True, maxsize=10)
        waiter = asyncio.ensure_future(sub.next_batch())
        await asyncio.sleep(0)
        await asyncio.to_thread(bus.close)
        with pytest.raises(BusClosed):
            await waiter

    asyncio.run(main())
