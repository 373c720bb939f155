"""The scheduler: one asyncio loop in its own thread owns every active run.

Decisions happen in *ticks*.  A tick advances each run's DAG (conditions, scatter),
admits queued runs by priority then age while machine slots are free, dispatches ready
step instances within the slots and each run's cpus, then commits every state change of
the tick, with its events, in ONE transaction — and only then starts processes.  Process
exits, timers and API commands schedule the next tick, so bursts are batched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.runs import (
    ACTIVE_STATES,
    STEP_OK,
    Run,
    RunState,
    StepRecord,
    StepState,
    transition,
)
from flowdeck.domain.validation import ValidWorkflow, validate_data
from flowdeck.errors import Conflict, NotFound
from flowdeck.executors.base import Executor, Outcome
from flowdeck.runtime import launch as launching
from flowdeck.runtime.active import FAILURES, ActiveRun, Instance
from flowdeck.runtime.cache import StepCache
from flowdeck.runtime.committer import Committer
from flowdeck.runtime.rundir import RunDir
from flowdeck.runtime.steps import StepError, evaluate_condition, foreach_items, resolver
from flowdeck.store.base import EventRow, Store, Tx

log = logging.getLogger("flowdeck.scheduler")
T = TypeVar("T")
Op = Callable[[Tx], None]


class Scheduler:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        executors: dict[str, Executor],
        code_dir_of: Callable[[str], Any],
    ) -> None:
        self.store = store
        self.settings = settings
        self.executors = executors
        self.code_dir_of = code_dir_of  # workflow id -> its archive directory, or None
        self.slots = float(settings.slots)
        self.used = 0.0
        self.active: dict[str, ActiveRun] = {}
        self.queued: dict[str, Run] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ops: list[Op] = []  # run updates and products, in order
        self._steps: dict[tuple[str, str, int], StepRecord] = {}  # the last record of each
        self._events: list[EventRow] = []
        self._tick_planned = False
        self._ready = threading.Event()
        self.committer = Committer(store)
        self.cache = StepCache(store, settings)  # reruns and memoization (runtime/cache.py)
        self._valid: dict[str, tuple[ValidWorkflow | None, bool]] = {}

    # -- thread and loop ----------------------------------------------------------------
    def start(self) -> None:
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
        if self.loop is None or self._thread is None:
            return
        try:
            self.call(self._shutdown)
        except Exception:
            log.exception("scheduler shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.committer.close()
        for executor in self.executors.values():
            executor.close()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the scheduler's thread and return its result."""
        assert self.loop is not None, "the scheduler is not running"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                value = fn(*args)
            except BaseException as exc:
                self._flush()
                future.set_exception(exc)
                return
            committed = self._flush()  # answer once the change is in the database

            def done(f: concurrent.futures.Future[None]) -> None:
                if f.exception() is not None:
                    future.set_exception(f.exception())
                else:
                    future.set_result(value)

            committed.add_done_callback(done)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def notify(self, run: Run) -> None:
        """A run was queued (and committed): take it in."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._take, run)

    def _plan(self) -> None:
        if not self._tick_planned and self.loop is not None:
            self._tick_planned = True
            self.loop.call_soon(self._tick)

    # -- state changes, batched ----------------------------------------------------------
    def _op(self, op: Op) -> None:
        self._ops.append(op)

    def _flush(self) -> concurrent.futures.Future[None]:
        """Hand everything decided since the last flush to the committer: one transaction,
        committed in order, while the loop goes on."""
        if not (self._ops or self._steps or self._events):
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        ops, self._ops = self._ops, []
        steps, self._steps = list(self._steps.values()), {}
        events, self._events = self._events, []
        return self.committer.submit(ops, steps, events)

    def _save(self, record: StepRecord) -> None:
        self._steps[(record.run_id, record.name, record.index)] = record

    def _run_state(
        self,
        ar: ActiveRun | Run,
        action: str,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Run:
        run = ar.run if isinstance(ar, ActiveRun) else ar
        rule = transition(run.state, action)
        now = clock.now()
        changes = {"state": rule.target, "state_since": now, **changes}
        new = dataclasses.replace(run, **changes)
        if isinstance(ar, ActiveRun):
            ar.run = new
        event_data = {"from": run.state.value, **(data or {})}
        self._op(lambda tx: tx.set_run(run.id, **changes))
        self._events.append(("run", run.id, f"run.{rule.target.value}", now, actor, event_data))
        return new

    def _step_state(
        self, ar: ActiveRun, inst: Instance, state: StepState, actor: str | None = None, **data: Any
    ) -> None:
        now = clock.now()
        inst.state = state
        inst.state_since = now
        record = inst.record(ar.run.id, now)
        payload = {"step": inst.step, "index": inst.index, "attempt": inst.attempts, **data}
        self._save(record)
        self._events.append(("run", record.run_id, f"step.{state.value}", now, actor, payload))

    # -- recovery, intake ----------------------------------------------------------------
    def _recover(self) -> None:
        with self.store.read() as tx:
            stale = tx.list_runs(
                None, states=[RunState.RUNNING, RunState.PAUSED, RunState.STOPPING], limit=10**9
            )
            queued = tx.list_runs(None, states=[RunState.QUEUED], newest_first=False, limit=10**9)
        for run in stale:
            self._abandon(run, "the server stopped while the run was active")
        for run in queued:
            self.queued[run.id] = run
        self._flush()
        self._plan()

    def _abandon(self, run: Run, reason: str) -> None:
        now = clock.now()
        with self.store.read() as tx:
            steps = tx.list_steps(run.id)
        for rec in steps:
            if rec.state in (StepState.RUNNING, StepState.PAUSED, StepState.PENDING):
                lost = dataclasses.replace(rec, state=StepState.LOST, state_since=now, error=reason)
                self._save(lost)
        self._run_state(
            run,
            "system_error",
            None,
            {"reason": reason},
            finished_at=now,
            error={"message": reason},
        )

    def _take(self, run: Run) -> None:
        if run.state is RunState.QUEUED and run.id not in self.active:
            self.queued[run.id] = run
            self._plan()

    def _workflow(self, workflow_id: str | None) -> tuple[ValidWorkflow | None, bool]:
        """A workflow version's validated spec and whether it has an archive; versions
        are immutable, so each is read and validated once."""
        if workflow_id is None:
            return None, False
        if workflow_id not in self._valid:
            with self.store.read() as tx:
                wf = tx.get_workflow(workflow_id)
            if wf is None:
                return None, False
            if len(self._valid) > 1000:
                self._valid.clear()
            self._valid[workflow_id] = (validate_data(wf.spec).workflow, wf.has_archive)
        return self._valid[workflow_id]

    def _activate(self, run: Run) -> ActiveRun | None:
        valid, has_archive = self._workflow(run.workflow_id)
        if valid is None:
            self._run_state(
                run,
                "system_error",
                None,
                finished_at=clock.now(),
                error={"message": "the run's workflow is missing or invalid"},
            )
            return None
        res = run.resources
        ar = ActiveRun(
            run=run,
            spec=valid.spec,
            deps=valid.dependencies,
            order=valid.order,
            rundir=RunDir.of(self.settings.data_dir, run.id),
            code_dir=self.code_dir_of(run.workflow_id) if has_archive and run.workflow_id else None,
            executor=str(res.get("executor", "local")),
            cpus=float(res.get("cpus") or self.slots),
            extra_env={str(k): str(v) for k, v in (res.get("env") or {}).items()},
        )
        ar.rundir.create()
        now = clock.now()
        for name in ar.order:  # every step shows in the status from the start
            placeholder = Instance(name, -1, None, 0, state_since=now).record(run.id, now)
            self._save(placeholder)
        return ar

    # -- the tick ------------------------------------------------------------------------
    def _tick(self) -> None:
        self._tick_planned = False
        try:
            self._tick_body()
        except Exception:
            log.exception("scheduler tick failed")
            self._ops.clear()

    def _tick_body(self) -> None:
        for ar in list(self.active.values()):
            if ar.run.state is RunState.RUNNING:
                self._advance(ar)
            self._maybe_finish(ar)
        starts: list[tuple[ActiveRun, Instance, Any]] = []
        for ar in self._by_priority(self.active.values()):
            if ar.run.state is RunState.RUNNING and not self._dispatch(ar, starts):
                break
        for run in sorted(
            self.queued.values(), key=lambda r: (-r.priority, r.queued_at or r.created_at, r.id)
        ):
            if self.used >= self.slots:
                break
            del self.queued[run.id]
            admitted = self._activate(run)
            if admitted is None:
                continue
            self.active[run.id] = admitted
            self._run_state(admitted, "dispatch", started_at=clock.now())
            walltime = run.resources.get("walltime_s")
            if walltime:
                assert self.loop is not None
                admitted.timers.append(
                    self.loop.call_later(float(walltime), self._run_walltime, admitted)
                )
            self._advance(admitted)
            self._dispatch(admitted, starts)
            self._maybe_finish(admitted)
        self._flush()
        assert self.loop is not None
        for owner, inst, launch in starts:
            executor = self.executors[inst.executor]
            inst.proc = executor.start(
                launch, functools.partial(self._exited, owner, inst), self.loop
            )
        if any(ar.finished() for ar in self.active.values()):
            self._plan()

    @staticmethod
    def _by_priority(runs: Any) -> list[ActiveRun]:
        return sorted(
            runs, key=lambda a: (-a.run.priority, a.run.queued_at or a.run.created_at, a.run.id)
        )

    def _context(self, ar: ActiveRun, item: Any = None) -> Any:
        return resolver(ar.run.params, ar.all_outputs(), item)

    def _advance(self, ar: ActiveRun) -> None:
        """Resolve every step whose dependencies are done: skip it, or create its
        instances."""
        for name in ar.order:
            if name in ar.resolved or name in ar.instances:
                continue
            states = [ar.aggregate(d) for d in ar.deps[name]]
            if any(
                s not in STEP_OK and s not in FAILURES and s is not StepState.SKIPPED
                for s in states
            ):
                continue  # still waiting
            step = ar.step(name)
            if any(s is not StepState.SUCCEEDED and s not in STEP_OK for s in states):
                self._resolve(ar, name, StepState.SKIPPED, reason="a dependency did not succeed")
                continue
            try:
                resolve = self._context(ar)
                if step.when is not None and not evaluate_condition(step.when, resolve):
                    self._resolve(ar, name, StepState.SKIPPED, reason="when is false")
                    continue
                items: list[Any] = (
                    foreach_items(step.foreach, resolve) if step.foreach is not None else [None]
                )
            except StepError as exc:
                self._resolve(ar, name, StepState.FAILED, reason=str(exc))
                self._failed(ar, name, str(exc))
                continue
            cpus = float(step.resources.cpus)
            executor = "inprocess" if step.python and ar.executor == "inprocess" else "local"
            if step.uses is not None:  # a child run (runtime/subflows.py): its steps count
                cpus, executor = 0.0, "subflow"
            group = [
                Instance(name, i if step.foreach is not None else -1, item, cpus, executor=executor)
                for i, item in enumerate(items)
            ]
            ar.instances[name] = group
            # the instances of a foreach replace the step's placeholder
            if step.foreach is not None and self._steps.pop((ar.run.id, name, -1), None) is None:
                self._op(_unsave(ar.run.id, name))
            for inst in group:
                self._step_state(ar, inst, StepState.PENDING)

    def _resolve(self, ar: ActiveRun, name: str, state: StepState, reason: str) -> None:
        ar.resolved[name] = state
        inst = Instance(name, -1, None, 0, error=reason)
        self._step_state(ar, inst, state, reason=reason)

    def _dispatch(self, ar: ActiveRun, starts: list[tuple[ActiveRun, Instance, Any]]) -> bool:
        """Start ready instances of ``ar``; False when the machine's slots are full."""
        for name in ar.order:
            for inst in ar.instances.get(name, ()):
                if inst.state is not StepState.PENDING or inst.waiting_retry:
                    continue
                if self.used + inst.cpus > self.slots and self.used > 0:
                    return False
                if ar.used + inst.cpus > ar.cpus and ar.used > 0:
                    return True
                if (source := self.cache.hit(ar, inst, self._op)) is not None:
                    self._step_state(ar, inst, StepState.CACHED, from_run=source)
                    self._plan()  # its dependents may be ready now
                    continue
                try:
                    launch = launching.prepare(ar, inst, self.settings)
                except StepError as exc:
                    inst.error = str(exc)
                    self._step_state(ar, inst, StepState.FAILED, error=str(exc))
                    self._failed(ar, inst.label, str(exc))
                    return True
                inst.attempts += 1
                inst.started_at = clock.now()
                inst.ended_at = inst.exit_code = inst.signal = None
                self.used += inst.cpus
                ar.used += inst.cpus
                self._step_state(ar, inst, StepState.RUNNING)
                starts.append((ar, inst, launch))
        return True

    # -- endings -------------------------------------------------------------------------
    def _exited(self, ar: ActiveRun, inst: Instance, outcome: Outcome) -> None:
        inst.proc = None
        self.used -= inst.cpus
        ar.used -= inst.cpus
        now = clock.now()
        inst.ended_at = now
        inst.exit_code, inst.signal = outcome.exit_code, outcome.signal
        inst.max_rss_kb, inst.cpu_time_s = outcome.max_rss_kb, outcome.cpu_time_s
        if ar.killing:
            self._step_state(ar, inst, StepState.KILLED)
        elif ar.run.state is RunState.STOPPING or (ar.failure is not None and not outcome.ok):
            self._step_state(ar, inst, StepState.CANCELLED)
        elif outcome.ok:
            try:
                inst.outputs = launching.collect(ar, inst, outcome, self._op)
                inst.error = None
                self._step_state(ar, inst, StepState.SUCCEEDED)
                self.cache.record(ar, inst, self._op)
            except StepError as exc:
                self._attempt_failed(ar, inst, StepState.FAILED, str(exc))
        else:
            state = StepState.TIMED_OUT if outcome.timed_out else StepState.FAILED
            self._attempt_failed(ar, inst, state, launching.describe(ar, inst, outcome))
        if ar.killing and not ar.running():
            ar.rundir.remove_work()
        self._plan()

    def _attempt_failed(
        self, ar: ActiveRun, inst: Instance, state: StepState, message: str
    ) -> None:
        inst.error = message
        retry = ar.step(inst.step).retry
        if (
            inst.attempts <= retry.count
            and ar.failure is None
            and ar.run.state in (RunState.RUNNING, RunState.PAUSED)
        ):
            delay = retry.delay(inst.attempts)
            self._step_state(ar, inst, state, error=message)
            inst.waiting_retry = True
            self._step_state(ar, inst, StepState.PENDING, retry_in_s=delay)

            def again() -> None:
                inst.waiting_retry = False
                inst.retry_timer = None
                self._plan()

            assert self.loop is not None
            inst.retry_timer = self.loop.call_later(delay, again)
            return
        self._step_state(ar, inst, state, error=message)
        if not ar.step(inst.step).allow_failure:
            self._failed(ar, inst.label, message)

    def _failed(self, ar: ActiveRun, label: str, message: str) -> None:
        """A step failed for good: stop everything else; the run fails when all ended."""
        if ar.failure is not None:
            return
        ar.failure = {"step": label, "message": message}
        self._cancel_pending(ar, StepState.CANCELLED)
        for inst in ar.running():
            assert inst.proc is not None
            inst.proc.terminate()
        self._kill_later(ar, self.settings.stop_grace_s)

    def _cancel_pending(self, ar: ActiveRun, state: StepState) -> None:
        for name in ar.order:
            if name not in ar.instances and name not in ar.resolved:
                self._resolve(ar, name, state, reason="the run ended first")
        for inst in ar.all_instances():
            if inst.state is StepState.PENDING:
                if inst.retry_timer is not None:
                    inst.retry_timer.cancel()
                self._step_state(ar, inst, state)

    def _kill_later(self, ar: ActiveRun, grace: float) -> None:
        def kill() -> None:
            for inst in ar.running():
                assert inst.proc is not None
                inst.proc.kill()

        assert self.loop is not None
        ar.timers.append(self.loop.call_later(grace, kill))

    def _maybe_finish(self, ar: ActiveRun) -> None:
        if ar.run.id not in self.active or not ar.finished():
            return
        now = clock.now()
        state = ar.run.state
        if state is RunState.STOPPING:
            self._run_state(ar, "stopped", finished_at=now)
        elif state is RunState.KILLED:
            ar.rundir.remove_work()
        elif ar.failure is not None:
            self._run_state(ar, "fail", None, ar.failure, finished_at=now, error=ar.failure)
        elif state is RunState.RUNNING:
            try:
                outputs = launching.workflow_outputs(ar)
            except StepError as exc:
                self._run_state(
                    ar,
                    "fail",
                    None,
                    {"message": str(exc)},
                    finished_at=now,
                    error={"message": str(exc)},
                )
            else:
                self._run_state(ar, "succeed", finished_at=now, outputs=outputs)
        else:
            return  # paused (drain) with nothing left: stays paused until resumed
        for timer in ar.timers:
            timer.cancel()
        self.cache.forget(ar.run.id)
        del self.active[ar.run.id]

    def _run_walltime(self, ar: ActiveRun) -> None:
        if ar.run.id in self.active and ar.failure is None:
            self._failed(
                ar, "", f"the run's walltime of {ar.run.resources['walltime_s']} s was exceeded"
            )
            self._kill_later(ar, 0)
            self._plan()

    # -- commands from the API (run in the loop through call()) ---------------------------
    def _find(self, run_id: str) -> ActiveRun | Run:
        if run_id in self.active:
            return self.active[run_id]
        if run_id in self.queued:
            return self.queued[run_id]
        raise NotFound(f"run {run_id} is not active")

    def pause(self, run_id: str, mode: str, actor: str) -> Run:
        ar = self._find(run_id)
        if not isinstance(ar, ActiveRun):
            transition(ar.state, "pause")  # queued: refused with the state
            raise AssertionError("unreachable")
        transition(ar.run.state, "pause")
        running = ar.running()
        if mode == "freeze":
            frozen = [i for i in running if not self.executors[i.executor].can_freeze]
            if frozen:
                raise Conflict(
                    "steps on the in-server executor cannot be frozen: use mode 'drain'",
                    steps=[i.label for i in frozen],
                )
            for inst in running:
                assert inst.proc is not None
                inst.proc.pause()
                self._step_state(ar, inst, StepState.PAUSED, actor)
        run = self._run_state(
            ar, "pause", actor, {"mode": mode}, paused_at=clock.now(), pause_mode=mode
        )
        return run

    def resume(self, run_id: str, actor: str) -> Run:
        ar = self._find(run_id)
        if not isinstance(ar, ActiveRun):
            transition(ar.state, "resume")
            raise AssertionError("unreachable")
        transition(ar.run.state, "resume")
        for inst in ar.all_instances():
            if inst.state is StepState.PAUSED and inst.proc is not None:
                inst.proc.resume()
                self._step_state(ar, inst, StepState.RUNNING, actor)
        now = clock.now()
        paused = (now - ar.run.paused_at).total_seconds() if ar.run.paused_at else 0.0
        run = self._run_state(
            ar, "resume", actor, paused_at=None, pause_mode=None, paused_s=ar.run.paused_s + paused
        )
        self._plan()
        return run

    def stop(self, run_id: str, grace_s: float, actor: str) -> Run:
        ar = self._find(run_id)
        now = clock.now()
        if not isinstance(ar, ActiveRun):
            del self.queued[run_id]
            return self._run_state(ar, "stop", actor, finished_at=now)
        extra = self._pause_end(ar, now)
        run = self._run_state(ar, "stop", actor, {"grace_s": grace_s}, **extra)
        self._cancel_pending(ar, StepState.CANCELLED)
        for inst in ar.running():
            assert inst.proc is not None
            inst.proc.terminate()
        self._kill_later(ar, grace_s)
        self._plan()
        return run

    def kill(self, run_id: str, actor: str) -> Run:
        ar = self._find(run_id)
        now = clock.now()
        if not isinstance(ar, ActiveRun):
            del self.queued[run_id]
            RunDir.of(self.settings.data_dir, run_id).remove_work()
            return self._run_state(ar, "kill", actor, finished_at=now)
        extra = self._pause_end(ar, now)
        run = self._run_state(ar, "kill", actor, finished_at=now, **extra)
        ar.killing = True
        self._cancel_pending(ar, StepState.KILLED)
        for inst in ar.running():
            assert inst.proc is not None
            inst.proc.kill()
        if not ar.running():
            ar.rundir.remove_work()
        self._plan()
        return run

    @staticmethod
    def _pause_end(ar: ActiveRun, now: datetime) -> dict[str, Any]:
        if ar.run.paused_at is None:
            return {}
        return {
            "paused_at": None,
            "paused_s": ar.run.paused_s + (now - ar.run.paused_at).total_seconds(),
        }

    def _shutdown(self) -> None:
        for ar in list(self.active.values()):
            ar.killing = True
            for inst in ar.running():
                assert inst.proc is not None
                inst.proc.kill()
            if ar.run.state in ACTIVE_STATES:
                self._run_state(
                    ar,
                    "system_error",
                    None,
                    {"reason": "server shut down"},
                    finished_at=clock.now(),
                    error={"message": "the server shut down during the run"},
                )
        self.active.clear()

    def is_active(self, run_id: str) -> bool:
        return run_id in self.active or run_id in self.queued


def _unsave(run_id: str, name: str) -> Op:
    def op(tx: Tx) -> None:
        tx.delete_step(run_id, name, -1)

    return op
