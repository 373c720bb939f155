"""An executor that starts nothing: tests decide when and how each attempt ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from flowdeck.executors.base import Executor, Launch, Outcome, StepProcess


@dataclass
class FakeProcess(StepProcess):
    key: str
    launch: Launch
    on_exit: Callable[[Outcome], None]
    loop: asyncio.AbstractEventLoop
    signals: list[str] = field(default_factory=list)
    done: bool = False

    def pause(self) -> None:
        self.signals.append("STOP")

    def resume(self) -> None:
        self.signals.append("CONT")

    def terminate(self) -> None:
        self.signals.append("TERM")

    def kill(self) -> None:
        self.signals.append("KILL")
        self.finish(Outcome(exit_code=None, signal=9))

    def finish(self, outcome: Outcome) -> None:
        if not self.done:
            self.done = True
            self.loop.call_soon_threadsafe(self.on_exit, outcome)


class FakeExecutor(Executor):
    name = "fake"
    starts_once = True

    def __init__(self, auto: Callable[[Launch], Outcome | None] | None = None) -> None:
        """``auto(launch)``: an outcome to end each attempt with at once (None: wait)."""
        self.auto = auto
        self.started: dict[str, FakeProcess] = {}

    def start(
        self, launch: Launch, on_exit: Callable[[Outcome], None], loop: asyncio.AbstractEventLoop
    ) -> StepProcess:
        if launch.key in self.started:  # as the supervisor: a key starts once
            return self.started[launch.key]
        proc = FakeProcess(launch.key, launch, on_exit, loop)
        self.started[launch.key] = proc
        outcome = self.auto(launch) if self.auto else None
        if outcome is not None:
            proc.finish(outcome)
        return proc
