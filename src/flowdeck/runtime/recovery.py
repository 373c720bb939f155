"""Restarts and ownership: this instance's lease, taking over active runs, re-adopting
their steps, and letting go of runs another instance took over.

At start (and, for runs of instances whose lease ran out, at every heartbeat) the
scheduler claims each active run it may own (compare-and-set on the run's fence), rebuilds
its in-memory picture from the step records, and reconciles every attempt that was running
with what the step supervisor and the run's attempt journal say:

- the attempt ended meanwhile: its outcome is taken as if the server had seen it;
- it is still running under the supervisor: it is adopted (exits come to us again);
- nobody knows it (the supervisor restarted, another host, an in-server step): it is
  ``lost`` — a process of it still alive is killed first, so a step is never run twice at
  once — and it is retried per its retry policy or fails the run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections import defaultdict
from typing import Any

from flowdeck import clock
from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.runs import STEP_DONE, Run, RunState, StepRecord, StepState
from flowdeck.errors import StoreUnavailable
from flowdeck.executors.base import CLUSTER_EXECUTORS, Launch, NoProcess, Outcome
from flowdeck.executors.dask import DaskExecutor
from flowdeck.executors.slurm import SlurmExecutor
from flowdeck.executors.supervised import SupervisedExecutor, SupervisorState, kill_orphan
from flowdeck.executors.wire import outcome_from_wire, process_start_time, read_records
from flowdeck.runtime import window
from flowdeck.runtime.active import FAILURES, ActiveRun, Instance
from flowdeck.runtime.core import SchedulerCore
from flowdeck.runtime.queue_news import queue_news
from flowdeck.runtime.rundir import attempt_key
from flowdeck.runtime.subflows import SubflowExecutor

log = logging.getLogger("flowdeck.scheduler")
ACTIVE = [RunState.RUNNING, RunState.PAUSED, RunState.STOPPING]
UNDER_WAY = frozenset({StepState.RUNNING, StepState.PAUSED})


class RecoveryMixin(SchedulerCore):
    _supervisor: SupervisorState | None
    _sweeping: asyncio.Task[list[str]] | None = None  # the start's cancel of stray jobs

    # -- this instance -------------------------------------------------------------------
    def _register(self) -> None:
        now = clock.now()
        me = ServerInstance(
            self.instance_id, self.host, os.getpid(), process_start_time(os.getpid()), now, now
        )
        with self.store.write() as tx:
            tx.add_instance(me)
        self.lease_renewed_at = now

    def _heartbeat(self) -> None:
        try:
            now = clock.now()
            holdings = self.admission.holdings(self.active.values())
            with self.store.write() as tx:
                renewed = tx.heartbeat(self.instance_id, now, holdings)
            if renewed:
                self.lease_renewed_at = now
            else:
                log.error("this instance's lease was ended by someone else")
            self._take_over(startup=False)
            if self.queued and self.admission.reasons:
                self._plan()  # runs waiting for a quota: what other servers hold may change
            self._flush()
        except StoreUnavailable as exc:  # an outage: one line per beat, not a traceback
            log.warning("heartbeat failed: %s", exc)
        except Exception:
            log.exception("heartbeat failed")
        assert self.loop is not None
        self.loop.call_later(self.settings.lease_ttl_s / 3, self._heartbeat)

    def _let_go(self, run_ids: set[str]) -> None:
        """Another instance owns these runs now: forget them, touch nothing."""
        for run_id in run_ids:
            ar = self.active.pop(run_id, None)
            if ar is None:
                continue
            for timer in ar.timers:
                timer.cancel()
            for inst in ar.running():
                self.used -= inst.cpus
            log.warning("run %s is owned by another instance now", run_id)

    # -- start ---------------------------------------------------------------------------
    def _recover(self) -> None:
        local = self.executors.get("local")
        self._supervisor = None
        if isinstance(local, SupervisedExecutor):
            assert self.loop is not None
            try:
                self._supervisor = local.connect(self.loop)
            except OSError:
                log.exception("cannot reach the step supervisor")
        self._take_over(startup=True)
        self._flush()
        slurm = self.executors.get("slurm")
        if isinstance(slurm, SlurmExecutor):
            assert self.loop is not None
            self._sweeping = self.loop.create_task(slurm.sweep(self._attempts_under_way))
        self._plan()
        assert self.loop is not None
        self.loop.call_later(self.settings.lease_ttl_s / 3, self._heartbeat)

    def _take_over(self, startup: bool) -> None:
        now = clock.now()
        ttl = self.settings.lease_ttl_s
        with self.store.read() as tx:
            runs = tx.list_runs(None, states=ACTIVE, limit=10**9)
            instances = {i.id: i for i in tx.list_instances()}
            live = [
                i.id
                for i in instances.values()
                if i.id == self.instance_id or i.lease_valid(now, ttl, self.host)
            ]
            # Queued runs: those of instances whose lease ended (at start, also those no
            # instance owns); they are claimed when admitted.  Only whose they are is read
            # here: each owner's first runs are held, up to the window (window.py).
            found = window.take_over(self, tx, live, startup)
        if found:
            window.refill(self)
            self._plan()
        wanted: list[tuple[Run, ServerInstance | None]] = []
        elsewhere: set[str] = set()
        for run in runs:
            if run.id in self.active:
                continue
            if not startup and run.owner_instance == self.instance_id:
                # Ours, and not active here: it ended in memory and the commit saying so
                # is not in yet (held through a database outage); never taken up again.
                continue
            owner = instances.get(run.owner_instance or "")
            if (
                owner is not None
                and owner.id != self.instance_id
                and owner.lease_valid(now, ttl, self.host)
            ):
                elsewhere.add(run.id)
                continue
            wanted.append((run, owner))
        owners = {run.id: owner for run, owner in wanted}
        for run in self._claim([run for run, _ in wanted]):
            owner = owners[run.id]
            self._restore(run, same_host=owner is None or owner.host == self.host)
        if startup and self._supervisor is not None:
            self._kill_strays(elsewhere)

    def _attempts_under_way(self, jobs: dict[str, str]) -> set[str]:
        """Of Slurm jobs by id with their attempt keys (``run/step/index/attempt``): those
        whose attempt is still under way by the store (its run active, its step running,
        paused or pending with its job submitted, at that attempt), whichever instance
        owns the run; a job of an attempt that ended or that nobody knows is not."""
        keep: set[str] = set()
        steps: dict[str, dict[tuple[str, int], StepRecord] | None] = {}

        def under_way(rec: StepRecord | None) -> bool:
            return rec is not None and (rec.in_queue or rec.state in UNDER_WAY)

        with self.store.read() as tx:
            for job_id, key in jobs.items():
                run_id, _, rest = key.partition("/")
                step, _, rest = rest.partition("/")
                index, _, attempt = rest.partition("/")
                if run_id not in steps:
                    run = tx.get_run(run_id)
                    steps[run_id] = (
                        {(r.name, r.index): r for r in tx.list_steps(run_id)}
                        if run is not None and run.active
                        else None
                    )
                by_step = steps[run_id] or {}
                if index == "array":  # a task of a foreach step's job array: kept while
                    # any instance of that step is under way (its task is its own)
                    if any(under_way(r) for (n, _), r in by_step.items() if n == step):
                        keep.add(job_id)
                    continue
                try:
                    rec = by_step.get((step, int(index)))
                    same = rec is not None and rec.attempts == int(attempt)
                except ValueError:
                    continue
                if same and under_way(rec):
                    keep.add(job_id)
        return keep

    def _kill_strays(self, elsewhere: set[str]) -> None:
        """Attempts the supervisor runs for runs that are over (killed while we were down)."""
        local = self.executors["local"]
        assert isinstance(local, SupervisedExecutor)
        assert self._supervisor is not None
        strays = {
            key: run_id
            for key in self._supervisor.running
            if (run_id := key.split("/", 1)[0]) not in self.active and run_id not in elsewhere
        }
        if not strays:
            return
        # read again: another server of the database may have started the run since the
        # runs were listed (it is active then, and not ours to kill)
        with self.store.read() as tx:
            live = {r for r in set(strays.values()) if (run := tx.get_run(r)) and run.active}
        for key, run_id in strays.items():
            if run_id not in live:
                log.warning("killing %s: its run is not active", key)
                local.send({"op": "signal", "key": key, "action": "kill"})

    # -- one run -------------------------------------------------------------------------
    def _restore(self, run: Run, same_host: bool) -> None:
        ar = self._activate(run, fresh=False)
        if ar is None:
            return
        self.active[run.id] = ar
        with self.store.read() as tx:
            records = tx.list_steps(run.id)
        by_name: dict[str, list[StepRecord]] = defaultdict(list)
        for rec in records:
            by_name[rec.name].append(rec)
        for name in ar.order:
            self._restore_step(ar, name, by_name.get(name, []))
        journal = read_records(ar.rundir.attempts)  # what the supervisor recorded
        for inst in ar.all_instances():
            self._reattach(ar, inst, same_host, journal)
        self._match_pause(ar)
        for inst in ar.all_instances():
            if (
                inst.state in FAILURES
                and inst.state is not StepState.CANCELLED
                and not ar.step(inst.step).allow_failure
                and ar.failure is None
            ):
                ar.failure = {"step": inst.label, "message": inst.error or inst.state.value}
        if ar.failure is not None:
            failure, ar.failure = ar.failure, None
            self._failed(ar, failure["step"], failure["message"])
        if run.state is RunState.STOPPING:
            self._cancel_pending(ar, StepState.CANCELLED)
            for inst in ar.running():
                assert inst.proc is not None
                inst.proc.terminate()
            self._kill_later(ar, self.settings.stop_grace_s)
        walltime = run.resources.get("walltime_s")
        if walltime and run.started_at is not None:
            left = float(walltime) - (clock.now() - run.started_at).total_seconds()
            assert self.loop is not None
            ar.timers.append(self.loop.call_later(max(0.0, left), self._run_walltime, ar))
        log.info("took over run %s (%d steps running)", run.id, len(ar.running()))
        self._plan()

    def _match_pause(self, ar: ActiveRun) -> None:
        """Make the adopted processes what the run's record says, whatever a crash cut
        short (the signals of a pause or a resume go out before its commit): frozen for a
        run paused with ``freeze``, running otherwise."""
        frozen = ar.run.state is RunState.PAUSED and ar.run.pause_mode == "freeze"
        for inst in ar.running():
            assert inst.proc is not None
            if inst.executor in CLUSTER_EXECUTORS and not (
                frozen or inst.state is StepState.PAUSED
            ):
                continue  # a running job needs no word
            if inst.executor not in ("local", *CLUSTER_EXECUTORS):  # child runs: their record
                continue
            if frozen:
                inst.proc.pause()
                if inst.state in (StepState.RUNNING, StepState.PENDING):
                    self._step_state(ar, inst, StepState.PAUSED, recovered=True)
            else:
                inst.proc.resume()
                if inst.state is StepState.PAUSED:
                    again = StepState.PENDING if inst.waiting is not None else StepState.RUNNING
                    self._step_state(ar, inst, again, recovered=True)

    def _restore_step(self, ar: ActiveRun, name: str, recs: list[StepRecord]) -> None:
        if ar.step(name).foreach is not None:
            instances = sorted((r for r in recs if r.index >= 0), key=lambda r: r.index)
            if instances:
                ar.instances[name] = [self._instance(ar, r) for r in instances]
                return
        rec = next((r for r in recs if r.index == -1), None)
        if rec is None or (rec.state is StepState.PENDING and rec.attempts == 0):
            return  # not started yet: the next tick creates its instances
        if rec.state in STEP_DONE and rec.attempts == 0 and rec.state is not StepState.CACHED:
            ar.resolved[name] = rec.state  # skipped, or ended before it ran
            return
        ar.instances[name] = [self._instance(ar, rec)]

    def _instance(self, ar: ActiveRun, rec: StepRecord) -> Instance:
        return Instance(
            rec.name,
            rec.index,
            rec.item,
            self._cpus_of(ar, rec.name),
            state=rec.state,
            state_since=rec.state_since,
            attempts=rec.attempts,
            executor=self._executor_of(ar, rec.name),
            outputs=dict(rec.outputs),
            exit_code=rec.exit_code,
            signal=rec.signal,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            max_rss_kb=rec.max_rss_kb,
            cpu_time_s=rec.cpu_time_s,
            error=rec.error,
            job_id=rec.job_id,
            waiting=rec.waiting,
        )

    def _reattach(
        self, ar: ActiveRun, inst: Instance, same_host: bool, journal: dict[str, dict[str, Any]]
    ) -> None:
        if inst.state is StepState.PENDING and inst.waiting is not None:
            pass  # a Slurm job waiting in the queue: adopted below
        elif inst.state is StepState.PENDING:
            # Started, but the server stopped before it committed that?
            nxt = attempt_key(ar.run.id, inst.step, inst.index, inst.attempts + 1)
            if nxt not in journal:
                return
            inst.attempts += 1
            inst.started_at = clock.now()
            self._step_state(ar, inst, StepState.RUNNING, recovered=True)
        elif inst.state not in (StepState.RUNNING, StepState.PAUSED):
            return
        on_exit = functools.partial(self._exited, ar, inst)
        if inst.executor == "subflow":  # its child run is taken over on its own
            subflow = self.executors["subflow"]
            assert isinstance(subflow, SubflowExecutor)
            assert self.loop is not None
            inst.proc = subflow.adopt(ar.run.id, inst.step, inst.index, on_exit, self.loop)
            return
        if inst.executor in CLUSTER_EXECUTORS:  # its job goes on: followed again by its id
            cluster = self.executors.get(inst.executor)
            if not isinstance(cluster, SlurmExecutor | DaskExecutor):
                where = "Slurm" if inst.executor == "slurm" else "Dask"
                why = f"this server does not offer {where}"
                self._attempt_failed(ar, inst, StepState.LOST, why)
                return
            step = ar.step(inst.step)
            stdout = ar.rundir.log(inst.step, inst.index, inst.attempts, "stdout")
            python = None
            if step.python is not None:  # its result file is read when it ends
                cwd = ar.rundir.step_dir(inst.step, inst.index)
                python = Launch(
                    key="", cwd=cwd, env={}, stdout=stdout, stderr=stdout, python=step.python
                )
            key = attempt_key(ar.run.id, inst.step, inst.index, inst.attempts)
            assert self.loop is not None
            inst.proc = cluster.adopt(key, stdout, on_exit, self.loop, python, inst.job_id)
            inst.proc.watch(functools.partial(queue_news, self, ar, inst))
            return
        if inst.executor != "local":
            self._attempt_failed(ar, inst, StepState.LOST, "the server restarted")
            return
        if not same_host:
            self._attempt_failed(ar, inst, StepState.LOST, "its server's host is gone")
            return
        key = attempt_key(ar.run.id, inst.step, inst.index, inst.attempts)
        record = journal.get(key)
        local = self.executors["local"]
        ended = record is not None and isinstance(record.get("outcome"), dict)
        if self.ports.streams(ar.spec, inst.step) and not (
            ended and self.ports.fed_whole(ar, inst)
        ):
            # Its feeding and tailing died with the server (or its input was cut short
            # by that); the attempt starts over (streams are at least once: a retry
            # reads its input from offset 0).
            if isinstance(local, SupervisedExecutor) and local.connected:
                local.send({"op": "signal", "key": key, "action": "kill"})
            else:
                kill_orphan(ar.rundir.attempts, key)
            self._attempt_failed(ar, inst, StepState.LOST, "the server restarted while it streamed")
            return
        self.used += inst.cpus
        ar.used += inst.cpus
        if record is not None and ended:
            if self.ports.streams(ar.spec, inst.step):
                self.ports.resume_outputs(ar, inst)  # what it wrote while nobody tailed
            inst.proc = NoProcess(inst.label)
            assert self.loop is not None
            self.loop.call_soon(on_exit, outcome_from_wire(record["outcome"]))
        elif isinstance(local, SupervisedExecutor) and local.connected:
            inst.proc = local.adopt(key, on_exit, ar.rundir.attempts)
        else:
            inst.proc = NoProcess(inst.label)
            assert self.loop is not None
            lost = Outcome(exit_code=None, lost=True, error="the step supervisor is unreachable")
            self.loop.call_soon(on_exit, lost)

    # -- stop ----------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Leave: local steps keep running under the supervisor for the next start to
        adopt; in-server steps end with the server (and are found lost then)."""
        self._flush()
