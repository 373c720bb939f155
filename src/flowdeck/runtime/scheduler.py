"""The scheduler: one asyncio loop in its own thread owns every active run of this server
instance.  The decisions are in :mod:`core`, the API's commands in :mod:`control`,
restarts, leases and re-adoption in :mod:`recovery`; this module runs them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.runs import Run
from flowdeck.errors import Conflict, StoreUnavailable
from flowdeck.executors.base import Executor
from flowdeck.ids import new_id
from flowdeck.runtime.cache import StepCache
from flowdeck.runtime.committer import Committer
from flowdeck.runtime.control import ControlMixin
from flowdeck.runtime.ports import PortHub, PortRuntime
from flowdeck.runtime.recovery import RecoveryMixin
from flowdeck.runtime.run_queue import RunQueue
from flowdeck.runtime.step_secrets import SecretSource
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck.scheduler")
T = TypeVar("T")


class SchedulerHandle(Protocol):
    """What the services use of a scheduler: this one, or the stand-in of one that runs in
    a process of its own (``services/scheduler_process.py``)."""

    instance_id: str
    slots: float
    used: float
    tick_observers: list[Callable[[float], None]]

    def notify(self, run: Run) -> None: ...

    def command(self, action: str, run_id: str, who: str, options: dict[str, Any]) -> Run: ...

    def close(self) -> None: ...


class Scheduler(ControlMixin, RecoveryMixin):
    def __init__(
        self,
        store: Store,
        settings: Settings,
        executors: dict[str, Executor],
        code_dir_of: Callable[[str], Any],
        ports: PortRuntime | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.executors = executors
        self.code_dir_of = code_dir_of  # workflow id -> its archive directory, or None
        self.ports = ports or PortRuntime(store, PortHub())
        self.cache = StepCache(store, settings)  # reruns and memoization (runtime/cache.py)
        self.secrets = SecretSource(store, settings.resolved_secret_key_file)
        self.instance_id = new_id("inst")
        self.host = settings.host_id or socket.gethostname()
        self.slots = float(settings.slots)
        self.used = 0.0
        self.active = {}
        self.queued = RunQueue(settings.scheduler_window)
        self.loop = None
        self.draining = False
        self._supervisor = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._intake: list[Run] = []  # queued runs handed over, not yet taken in (notify)
        self._intake_lock = threading.Lock()
        self._init_core()
        self.committer = Committer(store, self.instance_id, self._on_fenced)

    # -- thread and loop ----------------------------------------------------------------
    def start(self) -> None:
        self._register()
        self._thread = threading.Thread(target=self._main, name="flowdeck-scheduler", daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._recover)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def close(self) -> None:
        """Stop: with ``drain``, first let running steps finish; then commit what is
        decided and leave local steps running for the next start."""
        if self.loop is None or self._thread is None:
            return
        try:
            if self.settings.drain:
                self._drain()
            self.call(self._shutdown)
        except Exception:
            log.exception("scheduler shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.committer.close()
        self.ports.close()
        for executor in self.executors.values():
            executor.close()
        try:
            with self.store.write() as tx:
                if (usage := self.admission.usage_op(at_once=True)) is not None:
                    usage(tx)  # fair-share usage of the last second
                tx.stop_instance(self.instance_id, clock.now())
        except Exception:
            log.exception("could not record this instance's stop")

    def _drain(self) -> None:
        def start_nothing() -> int:
            self.draining = True
            return sum(len(ar.running()) for ar in self.active.values())

        running = self.call(start_nothing)
        if running:
            log.info("draining: waiting for %d running steps", running)
        while running:
            time.sleep(0.1)
            running = self.call(lambda: sum(len(ar.running()) for ar in self.active.values()))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the scheduler's thread and return its result once the
        changes it made are committed."""
        assert self.loop is not None, "the scheduler is not running"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            # What the loop decided before goes in a batch of its own: the answer names
            # only the refusals of runs that fn itself changed.
            self._flush()
            try:
                value = fn(*args)
            except BaseException as exc:
                self._flush()
                future.set_exception(exc)
                return
            committed = self._flush()  # answer once the change is in the database

            def done(f: concurrent.futures.Future[set[str]]) -> None:
                if f.exception() is not None:
                    future.set_exception(f.exception())
                elif f.result():
                    refused = Conflict(
                        "another server instance owns this run now: ask it again",
                        runs=sorted(f.result()),
                    )
                    # through the loop, after the let-go the committer planned there first
                    assert self.loop is not None
                    self.loop.call_soon_threadsafe(future.set_exception, refused)
                else:
                    future.set_result(value)

            committed.add_done_callback(done)

        self.loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout=60)
        except concurrent.futures.TimeoutError:
            raise StoreUnavailable(
                "the database has not taken the change within 60 s: it is recorded once "
                "the database answers"
            ) from None

    def command(self, action: str, run_id: str, who: str, options: dict[str, Any]) -> Run:
        """An API command on an active run (pause, resume, stop, kill), answered once
        committed; NotFound when the run is not active here."""
        if action == "pause":
            return self.call(self.pause, run_id, options.get("mode", "freeze"), who)
        if action == "resume":
            return self.call(self.resume, run_id, who)
        if action == "stop":
            return self.call(self.stop, run_id, float(options["grace_s"]), who)
        return self.call(self.kill, run_id, who)

    def notify(self, run: Run) -> None:
        """A run was queued (and committed): take it in.  Runs queued while the loop has
        not yet taken the last ones in join them: one wake-up of the loop per burst, not
        per run (and in order, before any command asked after this call)."""
        if self.loop is None:
            return
        with self._intake_lock:
            first = not self._intake
            self._intake.append(run)
        if first:
            self.loop.call_soon_threadsafe(self._take_intake)

    def _take_intake(self) -> None:
        with self._intake_lock:
            runs, self._intake = self._intake, []
        for run in runs:
            self._take(run)

    def _on_fenced(self, run_ids: set[str]) -> None:
        """(The committer's thread.)  Changes of these runs were refused: let go of them."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._let_go, run_ids)
