"""Sub-workflows: a ``uses: name@version`` step instance runs as a *child run*.

The scheduler treats a ``uses:`` instance like any other, on the ``subflow`` executor:
starting it creates a normal run of the used workflow (same owner, its ``with:`` values as
parameters, linked to the parent run, step and instance, tagged ``parent:<run id>``) and
queues it; the instance ends when the child run ends — succeeded with the child's
workflow outputs as the step's outputs, or failed naming the child's error.  The parent's
pause, resume, stop and kill reach the child through the instance's process handle.  The
instance takes no CPU slot itself: the child's steps do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from flowdeck.domain.composition import CHILD
from flowdeck.domain.runs import TERMINAL_STATES, Event, Run, RunState
from flowdeck.errors import StoreUnavailable
from flowdeck.executors.base import Executor, Launch, Outcome, StepProcess
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck.subflows")
# (parent run id, step, index, "name@version", with values) -> the queued child run
CreateChild = Callable[[str, str, int, str, dict[str, Any]], Run]
ENDINGS = frozenset(f"run.{s.value}" for s in TERMINAL_STATES)


class ChildRun(StepProcess):
    """The handle of a running ``uses:`` instance: its child run."""

    def __init__(self, executor: SubflowExecutor, child_id: str, grace_s: float) -> None:
        self.key = child_id
        self.executor = executor
        self.grace_s = grace_s

    def _command(self, name: str, *args: Any) -> None:
        sched = self.executor.scheduler
        if sched is None:
            return
        with contextlib.suppress(Exception):  # queued, or ended meanwhile: nothing to do
            getattr(sched, name)(self.key, *args, cast(str, None))

    def pause(self) -> None:
        self._command("pause", "freeze")

    def resume(self) -> None:
        self._command("resume")

    def terminate(self) -> None:
        self._command("stop", self.grace_s)

    def kill(self) -> None:
        self._command("kill")


class SubflowExecutor(Executor):
    name = "subflow"
    can_freeze = True

    def __init__(self, store: Store, create_child: CreateChild, grace_s: float) -> None:
        self.store = store
        self.create_child = create_child
        self.grace_s = grace_s
        self.scheduler: Any = None  # set once the scheduler exists (it owns the loop)
        self._waiting: dict[str, tuple[Callable[[Outcome], None], asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()
        store.add_commit_listener(self._on_commit)

    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        parent = launch.env["FLOWDECK_RUN_ID"]
        step = launch.env["FLOWDECK_STEP"]
        index = int(launch.env.get("FLOWDECK_INDEX", "-1"))
        try:
            child = self.create_child(parent, step, index, launch.argv[1], dict(launch.kwargs))
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            outcome = Outcome(
                exit_code=None,
                # lost, as an attempt that never ran (retried per the step's policy)
                lost=isinstance(exc, StoreUnavailable),
                error=f"the sub-workflow cannot start: {message}",
            )
            loop.call_soon(on_exit, outcome)
            return ChildRun(self, "", self.grace_s)
        with self._lock:
            self._waiting[child.id] = (on_exit, loop)
        return ChildRun(self, child.id, self.grace_s)

    def adopt(
        self,
        parent_id: str,
        step: str,
        index: int,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        """Follow the child run of an instance started before a restart (or say it ended);
        an instance whose child was never created starts it now."""
        with self.store.read() as tx:
            links = [
                link
                for link in tx.list_run_links(parent_id, CHILD)
                if link.step == step and link.index == index
            ]
            child = tx.get_run(links[-1].run_id) if links else None
        if child is None:
            outcome = Outcome(exit_code=None, lost=True, error="its child run was never created")
            loop.call_soon(on_exit, outcome)
            return ChildRun(self, "", self.grace_s)
        with self._lock:
            self._waiting[child.id] = (on_exit, loop)
        if child.state in TERMINAL_STATES:
            with self._lock:
                self._waiting.pop(child.id, None)
            loop.call_soon(self._ended, child.id, on_exit)
        return ChildRun(self, child.id, self.grace_s)

    def _on_commit(self, events: list[Event]) -> None:
        for e in events:
            if e.subject_kind == "run" and e.type in ENDINGS:
                with self._lock:
                    waiting = self._waiting.pop(e.subject_id, None)
                if waiting is not None:
                    on_exit, loop = waiting
                    loop.call_soon_threadsafe(self._ended, e.subject_id, on_exit)

    def _ended(self, child_id: str, on_exit: Callable[[Outcome], None]) -> None:
        try:
            with self.store.read() as tx:
                child = tx.get_run(child_id)
        except StoreUnavailable:  # read again in a second: the parent waits meanwhile
            asyncio.get_running_loop().call_later(1.0, self._ended, child_id, on_exit)
            return
        if child is not None and child.state is RunState.SUCCEEDED:
            on_exit(Outcome(exit_code=0, result=dict(child.outputs)))
            return
        state = child.state.value if child is not None else "deleted"
        reason = (child.error or {}).get("message") if child is not None else None
        on_exit(
            Outcome(
                exit_code=1,
                error=f"sub-workflow run {child_id} {state}" + (f": {reason}" if reason else ""),
            )
        )
