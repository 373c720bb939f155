"""The in-process notifier of stream ports: waiters are woken from other threads, in their
own loop, by a change of their port or the end of its run."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from flowdeck.domain.runs import Event
from flowdeck.runtime.ports import PortHub

KEY = ("run_1", "output", "results")


def test_a_change_from_another_thread_wakes_the_waiter() -> None:
    hub = PortHub()

    async def main() -> None:
        future = hub.waiter(KEY)
        other = hub.waiter(("run_1", "output", "other"))
        threading.Thread(target=hub.changed, args=(KEY,)).start()
        await asyncio.wait_for(future, 30)
        assert not other.done()
        hub.discard(("run_1", "output", "other"), other)

    asyncio.run(main())


def test_the_end_of_a_run_wakes_every_waiter_of_its_ports() -> None:
    hub = PortHub()
    hub.set_delivered("run_1", "records", 5)
    at = datetime(2026, 1, 1, tzinfo=UTC)

    async def main() -> None:
        futures = [hub.waiter(KEY), hub.waiter(("run_1", "input", "records"))]
        unrelated = hub.waiter(("run_2", "output", "results"))
        ended = Event(1, "run", "run_1", 9, "run.succeeded", at, None, {}, "u_1")
        still = Event(2, "run", "run_2", 3, "step.succeeded", at, None, {}, "u_1")
        threading.Thread(target=hub.on_commit, args=([ended, still],)).start()
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert not unrelated.done()

    asyncio.run(main())
    assert hub.delivered("run_1", "records") == 0


def test_watchers_are_called_until_unwatched() -> None:
    hub = PortHub()
    calls: list[int] = []

    def watcher() -> None:
        calls.append(1)

    hub.watch(KEY, watcher)
    hub.changed(KEY)
    hub.unwatch(KEY, watcher)
    hub.changed(KEY)
    assert calls == [1]
