"""The scheduler's core: decisions in *ticks*, state changes batched into group commits.

A tick advances each run's DAG (conditions, scatter), admits queued runs by fair share
among users and within their quotas (:mod:`admission`) while machine slots are free,
dispatches ready step instances within the slots and each run's cpus, then hands every
state change of the tick, with its events, to the committer (ONE transaction, fenced by
this instance's ownership of each run) — and only then starts processes.  Process exits,
timers and API commands schedule the next tick, so bursts are batched.  Control commands
live in :mod:`control`, restarts and ownership in :mod:`recovery`; :mod:`scheduler` puts
them together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.composition import CacheEntry
from flowdeck.domain.runs import (
    STEP_OK,
    Run,
    RunState,
    StepRecord,
    StepState,
    transition,
)
from flowdeck.domain.validation import ValidWorkflow, validate_data
from flowdeck.errors import StoreUnavailable
from flowdeck.executors.base import CLUSTER_EXECUTORS, Executor, Outcome
from flowdeck.runtime import launch as launching
from flowdeck.runtime import window
from flowdeck.runtime.active import FAILURES, ActiveRun, Instance
from flowdeck.runtime.admission import Admission, admit
from flowdeck.runtime.cache import StepCache
from flowdeck.runtime.committer import Batch, Committer
from flowdeck.runtime.ports import PortRuntime
from flowdeck.runtime.queue_news import queue_news
from flowdeck.runtime.run_queue import RunQueue
from flowdeck.runtime.rundir import RunDir
from flowdeck.runtime.step_secrets import SecretSource, mask_file, mask_text, remove
from flowdeck.runtime.steps import StepError, evaluate_condition, foreach_items, resolver
from flowdeck.store.base import EventRow, Store, Tx

log = logging.getLogger("flowdeck.scheduler")
STORE_RETRY_S = 1.0  # a tick cut short by the database tries again after this
Start = tuple[ActiveRun, Instance, Any]  # a dispatched instance: its run, itself, its launch
# A change to commit: a function of the transaction, or (a dict) new values of the run's
# own row, which the committer merges and writes with other runs' in one statement.
Change = Callable[[Tx], None] | dict[str, Any]


class SchedulerCore:
    store: Store
    settings: Settings
    executors: dict[str, Executor]
    code_dir_of: Callable[[str], Any]
    instance_id: str
    host: str  # this server's host (settings.host_id, else the host name)
    slots: float
    used: float
    active: dict[str, ActiveRun]
    queued: RunQueue
    loop: asyncio.AbstractEventLoop | None
    committer: Committer
    draining: bool
    ports: PortRuntime
    cache: StepCache
    secrets: SecretSource

    def _init_core(self) -> None:
        self._ops: list[tuple[str, Change]] = []  # run updates and products, in order
        self._steps: dict[tuple[str, str, int], StepRecord] = {}  # the last record of each
        self._events: list[EventRow] = []
        self._cache_entries: list[CacheEntry] = []  # rerun cache entries to save
        self._tick_planned = False
        self._valid: dict[str, tuple[ValidWorkflow | None, bool]] = {}
        self._claims: dict[str, int] = {}  # runs admitted since the last flush: old fences
        # When the last renewal of this instance's lease began (see lease_fresh).
        self.lease_renewed_at = clock.now()
        # Observers of each tick's duration in seconds (metrics).
        self.tick_observers: list[Callable[[float], None]] = []
        self.admission = Admission(self.settings)  # fair share and quotas
        self.store_queue = window.StoreQueue()  # queued runs beyond the window (window.py)

    def lease_fresh(self) -> bool:
        """Is this instance's lease surely still its own?  Renewed less than half a
        lease ago (renewals come every third): no other instance can have taken its
        runs over, so their steps may start before the commit that records them."""
        age = (clock.now() - self.lease_renewed_at).total_seconds()
        return age < self.settings.lease_ttl_s / 2

    def _plan(self) -> None:
        if not self._tick_planned and self.loop is not None:
            self._tick_planned = True
            self.loop.call_soon(self._tick)

    # -- state changes, batched ----------------------------------------------------------
    def _op(self, run_id: str, op: Change) -> None:
        self._ops.append((run_id, op))

    def _flush(self) -> concurrent.futures.Future[set[str]]:
        """Hand everything decided since the last flush to the committer: one transaction,
        committed in order, while the loop goes on."""
        if (usage := self.admission.usage_op()) is not None:
            self._op("", usage)  # users' fair-share usage (of no run: never fenced off)
        leaving = window.committing(self)
        if not (self._ops or self._steps or self._events or self._cache_entries):
            if leaving is not None:
                window.committed(self, leaving)
            done: concurrent.futures.Future[set[str]] = concurrent.futures.Future()
            done.set_result(set())
            return done
        ops, self._ops = self._ops, []
        steps, self._steps = list(self._steps.values()), {}
        events, self._events = self._events, []
        cached, self._cache_entries = self._cache_entries, []
        touched = {r for r, _ in ops} | {s.run_id for s in steps} | {e[1] for e in events}
        fences = {r: self.active[r].fence for r in touched if r in self.active}
        claims, self._claims = self._claims, {}
        future = self.committer.submit(Batch(ops, steps, events, fences, claims, cached))
        if leaving is not None:
            future.add_done_callback(functools.partial(self._left_queue, leaving))
        return future

    def _left_queue(self, leaving: Any, _: concurrent.futures.Future[set[str]]) -> None:
        """(The committer's thread.)  Runs that left the queue are so in the store."""
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # (a closed loop: the server stops)
            loop.call_soon_threadsafe(window.committed, self, leaving)

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
        self._op(run.id, changes)
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

    # -- intake --------------------------------------------------------------------------
    def _take(self, run: Run) -> None:
        if run.id not in self.queued and self.store_queue.was_read(run.id):
            return  # read from the store before its hand-over came: taken, maybe ended
        if run.state is RunState.QUEUED and run.id not in self.active:
            self.queued[run.id] = run
            if (reason := self.admission.reasons.get(run.owner_id)) is not None:
                self._op(run.id, {"waiting": reason})  # its owner is at a quota
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

    def _activate(self, run: Run, fresh: bool = True) -> ActiveRun | None:
        """The in-memory picture of a run that starts (``fresh``) or is taken over."""
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
        executor = str(res.get("executor", "local"))
        if executor in CLUSTER_EXECUTORS and executor not in self.executors:
            self._run_state(
                run,
                "system_error",
                None,
                finished_at=clock.now(),
                error={
                    "message": f"this server does not offer the {executor} executor "
                    f"({executor} = false)"
                },
            )
            return None
        ar = ActiveRun(
            run=run,
            spec=valid.spec,
            deps=valid.dependencies,
            order=valid.order,
            rundir=RunDir.of(self.settings.data_dir, run.id),
            code_dir=self.code_dir_of(run.workflow_id) if has_archive and run.workflow_id else None,
            executor=executor,
            cpus=float(res.get("cpus") or self.slots),
            extra_env={str(k): str(v) for k, v in (res.get("env") or {}).items()},
            fence=run.fence,
        )
        ar.rundir.create()
        if fresh:
            now = clock.now()
            for name in ar.order:  # every step shows in the status from the start
                placeholder = Instance(name, -1, None, 0, state_since=now).record(run.id, now)
                self._save(placeholder)
        return ar

    def _claim(self, runs: list[Run]) -> list[Run]:
        """Take ownership of runs now (one transaction); those someone else changed
        first are dropped."""
        claimed: list[Run] = []
        with self.store.write() as tx:
            for run in runs:
                fence = tx.claim_run(run.id, self.instance_id, run.fence)
                if fence is not None:
                    claimed.append(
                        dataclasses.replace(run, owner_instance=self.instance_id, fence=fence)
                    )
        return claimed

    # -- the tick ------------------------------------------------------------------------
    def _tick(self) -> None:
        self._tick_planned = False
        started = time.perf_counter()
        try:
            self._tick_body()
        except StoreUnavailable as exc:
            # A read the tick needed failed: what it decided so far stands (and is
            # committed once the database answers); the rest waits for the next try.
            log.warning("scheduler tick cut short: %s", exc)
            self._flush()
            self._retry_soon()
        except Exception:
            log.exception("scheduler tick failed")
            self._ops.clear()
        elapsed = time.perf_counter() - started
        for observe in self.tick_observers:
            observe(elapsed)

    def _retry_soon(self) -> None:
        """Tick again in a second (a read failed for want of the database)."""
        assert self.loop is not None
        self.loop.call_later(STORE_RETRY_S, self._plan)

    def _tick_body(self) -> None:
        starts: list[Start] = []  # of runs this instance owns
        claimed: list[Start] = []  # of runs this tick claims
        self.admission.count_holdings(self.active.values())
        try:
            for ar in list(self.active.values()):
                if ar.run.state is RunState.RUNNING:
                    self._advance(ar)
                self._maybe_finish(ar)
            for ar in self._by_priority(self.active.values()):
                if ar.run.state is RunState.RUNNING and not self._dispatch(ar, starts):
                    break
            if (self.queued or self.queued.low) and not self.draining:
                try:
                    admit(self, claimed, starts)
                except StoreUnavailable as exc:  # those admitted so far start; others wait
                    log.warning("cannot admit queued runs yet: %s", exc)
                    self._retry_soon()
        finally:  # whatever cut the tick short, what it dispatched starts
            self._launch(starts, claimed)
        if any(ar.finished() for ar in self.active.values()):
            self._plan()

    def _launch(
        self,
        starts: list[Start],
        claimed: list[Start],
    ) -> None:
        """Start what a tick dispatched and hand its changes to the committer.

        Steps of runs this instance owns start at once, before the commit that records
        them, when both hold: its lease is surely its own, and their executor starts a key
        once (the supervisor: after a crash before that commit, the restarted server asks
        again for the same attempt and is answered with the process that runs, or its
        outcome, from the run's attempt journal, so the store still gets every attempt
        that ran).  The rest, and the steps of runs this tick claims, start once the
        commit is in (see _start_claimed)."""
        early: list[Start] = []
        claimed = list(claimed)
        fresh = self.lease_fresh()
        for start in starts:
            once = fresh and self.executors[start[1].executor].starts_once
            (early if once else claimed).append(start)
        self._start(early)
        committed = self._flush()
        if claimed:
            assert self.loop is not None
            loop = self.loop
            committed.add_done_callback(
                lambda f: loop.call_soon_threadsafe(self._start_claimed, claimed, f)
            )

    def _start(self, starts: list[Start]) -> None:
        assert self.loop is not None
        for owner, inst, launch in starts:
            executor = self.executors[inst.executor]
            inst.proc = executor.start(
                launch, functools.partial(self._exited, owner, inst), self.loop
            )
            inst.proc.watch(functools.partial(queue_news, self, owner, inst))
            executor.when_started(launch.key, functools.partial(self.ports.started, launch.key))

    def _start_claimed(
        self,
        starts: list[Start],
        committed: concurrent.futures.Future[set[str]],
    ) -> None:
        """Start the first steps of runs admitted by a tick, now that owning them is
        committed; runs someone else took first are let go."""
        lost = committed.exception() is not None
        stale = set() if lost else committed.result()
        ok = []
        for ar, inst, launch in starts:
            if lost or ar.run.id in stale or self.active.get(ar.run.id) is not ar:
                self.used -= inst.cpus
                ar.used -= inst.cpus
                if lost and self.active.get(ar.run.id) is ar:
                    del self.active[ar.run.id]  # the next start takes it over
            elif ar.killing or ar.failure is not None or ar.run.state is RunState.STOPPING:
                ended_first = Outcome(exit_code=None, error="the run ended before it started")
                self._exited(ar, inst, ended_first)  # killed or cancelled, never started
            elif ar.run.state is RunState.PAUSED:
                self.used -= inst.cpus  # it starts when the run resumes
                ar.used -= inst.cpus
                inst.attempts -= 1
                self._step_state(ar, inst, StepState.PENDING)
            else:
                ok.append((ar, inst, launch))
        self._start(ok)
        self._flush()

    @staticmethod
    def _by_priority(runs: Any) -> list[ActiveRun]:
        return sorted(
            runs,
            key=lambda a: (
                -a.run.admin_priority,
                -a.run.priority,
                a.run.queued_at or a.run.created_at,
                a.run.id,
            ),
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
            cpus = self._cpus_of(ar, name)
            executor = self._executor_of(ar, name)
            group = [
                Instance(name, i if step.foreach is not None else -1, item, cpus, executor=executor)
                for i, item in enumerate(items)
            ]
            ar.instances[name] = group
            # the instances of a foreach replace the step's placeholder
            if step.foreach is not None and self._steps.pop((ar.run.id, name, -1), None) is None:
                self._op(ar.run.id, _unsave(ar.run.id, name))
            for inst in group:
                self._step_state(ar, inst, StepState.PENDING)

    @staticmethod
    def _executor_of(ar: ActiveRun, name: str) -> str:
        step = ar.step(name)
        if step.uses is not None:
            return "subflow"  # a child run (runtime/subflows.py)
        if ar.executor in CLUSTER_EXECUTORS:
            return ar.executor
        return "inprocess" if step.python and ar.executor == "inprocess" else "local"

    @staticmethod
    def _cpus_of(ar: ActiveRun, name: str) -> float:
        """The slots of this machine an instance takes: none for a child run (its steps
        count) or a Slurm job or Dask task (the cluster schedules it)."""
        step = ar.step(name)
        if step.uses is not None or ar.executor in CLUSTER_EXECUTORS:
            return 0.0
        return float(step.resources.cpus)

    def _resolve(self, ar: ActiveRun, name: str, state: StepState, reason: str) -> None:
        ar.resolved[name] = state
        inst = Instance(name, -1, None, 0, error=reason)
        self._step_state(ar, inst, state, reason=reason)

    def _dispatch(self, ar: ActiveRun, starts: list[Start]) -> bool:
        """Start ready instances of ``ar``; False when the machine's slots are full."""
        if self.draining:
            return False
        for name in ar.order:
            group = ar.instances.get(name, ())
            # Instances before the cursor are done (a done instance never runs again): a
            # wide scatter is not rescanned from its start at every tick.
            if group:
                ar.all_done(name)
            room = self._room(ar, name, group)
            for inst in itertools.islice(group, ar.cursor.get(name, 0), None):
                if not inst.startable:
                    continue
                if room is not None:
                    if room <= 0:
                        break  # its foreach_limit: the next instance waits for one to end
                    room -= 1
                if self.used + inst.cpus > self.slots and self.used > 0:
                    return False
                if ar.used + inst.cpus > ar.cpus and ar.used > 0:
                    return True
                if not self.admission.cpus_allowed(ar.run.owner_id, inst.cpus):
                    return True  # its owner's CPU quota: another user's run may start
                op = functools.partial(self._op, ar.run.id)
                try:
                    source = self.cache.hit(ar, inst, op, self._cache_entries.append)
                    if source is not None:
                        self._step_state(ar, inst, StepState.CACHED, from_run=source)
                        self._plan()  # its dependents may be ready now
                        continue
                    prepared = launching.prepare(ar, inst, self.settings, self.secrets)
                    launch = self.ports.attach(ar, inst, prepared)
                except StoreUnavailable as exc:
                    # the instance stays pending; the steps dispatched before it start
                    log.warning("cannot start %s yet: %s", inst.label, exc)
                    self._retry_soon()
                    return False
                except StepError as exc:
                    inst.error = str(exc)
                    self._step_state(ar, inst, StepState.FAILED, error=str(exc))
                    self._failed(ar, inst.label, str(exc))
                    return True
                inst.attempts += 1
                inst.started_at = clock.now()
                inst.ended_at = inst.exit_code = inst.signal = None
                inst.job_id = inst.waiting = None
                self.used += inst.cpus
                ar.used += inst.cpus
                self.admission.holding[ar.run.owner_id] += inst.cpus
                self._step_state(ar, inst, StepState.RUNNING)
                starts.append((ar, inst, launch))
        return True

    @staticmethod
    def _room(ar: ActiveRun, name: str, group: Any) -> int | None:
        """How many more instances of a step with ``foreach_limit`` may start now (None:
        no limit).  On Slurm its first attempts all start at once, as one job array whose
        throttle keeps the limit; a retry waits until fewer are under way."""
        limit = ar.step(name).foreach_limit
        if limit is None or not group:
            return None
        if ar.executor == "slurm" and not any(i.attempts for i in group):
            return None
        return limit - sum(1 for i in group if i.proc is not None or i.state is StepState.RUNNING)

    # -- endings -------------------------------------------------------------------------
    def _exited(self, ar: ActiveRun, inst: Instance, outcome: Outcome) -> None:
        if ar.run.id not in self.active or self.active[ar.run.id] is not ar:
            return  # let go of (another instance owns the run now)
        inst.proc = None
        self.used -= inst.cpus
        ar.used -= inst.cpus
        now = clock.now()
        inst.ended_at = now
        inst.waiting = None
        inst.exit_code, inst.signal = outcome.exit_code, outcome.signal
        inst.max_rss_kb, inst.cpu_time_s = outcome.max_rss_kb, outcome.cpu_time_s
        self.admission.record_usage(ar, inst, now)
        if ar.step(inst.step).secrets:
            self._end_secrets(ar, inst)
        if ar.killing:
            if inst.state is StepState.KILLED:  # said at the kill: the record only
                self._save(inst.record(ar.run.id, now))
            else:
                self._step_state(ar, inst, StepState.KILLED)
        elif ar.run.state is RunState.STOPPING or (ar.failure is not None and not outcome.ok):
            self._step_state(ar, inst, StepState.CANCELLED)
        elif outcome.lost:
            self._attempt_failed(ar, inst, StepState.LOST, outcome.error or "the step was lost")
        elif outcome.ok:
            try:
                inst.outputs = launching.collect(
                    ar, inst, outcome, functools.partial(self._op, ar.run.id)
                )
                inst.error = None
                self._step_state(ar, inst, StepState.SUCCEEDED)
                self.cache.record(ar, inst, self._cache_entries.append)
            except StepError as exc:
                self._attempt_failed(ar, inst, StepState.FAILED, str(exc))
        else:
            state = StepState.TIMED_OUT if outcome.timed_out else StepState.FAILED
            self._attempt_failed(ar, inst, state, launching.describe(ar, inst, outcome))
        self.ports.ended(ar, inst)
        inst.secret_values = []
        if ar.killing and not ar.running():
            ar.rundir.remove_work()
        self._plan()

    def _end_secrets(self, ar: ActiveRun, inst: Instance) -> None:
        """The attempt's secret files go; its stored logs are masked before its end is
        told (and before its error, which quotes standard error, is made)."""
        step = ar.step(inst.step)
        if not inst.secret_values:  # started before a restart: the values were not kept
            names = [use.name for use in step.secrets]
            inst.secret_values = self.secrets.quiet_values(ar.run.owner_id, names)
        cwd = ar.rundir.step_dir(inst.step, inst.index)
        files = inst.secret_files or [cwd / u.file for u in step.secrets if u.file is not None]
        remove(files)
        inst.secret_files = []
        for stream in ("stdout", "stderr"):
            path = ar.rundir.log(inst.step, inst.index, inst.attempts, stream)
            try:
                mask_file(path, inst.secret_values)
            except OSError as exc:
                log.error("cannot mask the %s of %s: %s", stream, inst.label, exc.strerror)

    def _attempt_failed(
        self, ar: ActiveRun, inst: Instance, state: StepState, message: str
    ) -> None:
        if inst.secret_values:
            message = mask_text(message, inst.secret_values)
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
            if inst.state is StepState.PENDING and inst.proc is None:  # (not submitted)
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


def _unsave(run_id: str, name: str) -> Change:
    def op(tx: Tx) -> None:
        tx.delete_step(run_id, name, -1)

    return op
