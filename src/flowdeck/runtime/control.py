"""Commands from the API on active runs: pause, resume, stop, kill.  They run in the
scheduler's loop (see ``Scheduler.call``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flowdeck import clock
from flowdeck.domain.runs import Run, StepState, transition
from flowdeck.errors import Conflict, NotFound
from flowdeck.runtime import window
from flowdeck.runtime.active import ActiveRun
from flowdeck.runtime.core import SchedulerCore
from flowdeck.runtime.rundir import RunDir, forget_removed_files


class ControlMixin(SchedulerCore):
    def _find(self, run_id: str) -> ActiveRun | Run:
        if run_id in self.active:
            return self.active[run_id]
        if run_id in self.queued:
            return self.queued[run_id]
        # queued beyond the window of its owner's runs held here: in the store
        if (run := window.find_queued(self, run_id)) is not None:
            return run
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
                    self.executors[frozen[0].executor].freeze_refusal,
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
                # a Slurm job frozen while it waited in the queue waits again
                again = StepState.PENDING if inst.waiting is not None else StepState.RUNNING
                self._step_state(ar, inst, again, actor)
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
            self._unqueue(run_id)
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
        """SIGKILL now.  Every step is ``killed`` at once, before the run's own final
        event (``run.killed`` comes last, as for any ending); a process that takes a moment
        to go only updates its step's record when it does."""
        ar = self._find(run_id)
        now = clock.now()
        if not isinstance(ar, ActiveRun):
            transition(ar.state, "kill")
            self._unqueue(run_id)
            RunDir.of(self.settings.data_dir, run_id).remove_work()
            self._op(run_id, lambda tx: forget_removed_files(tx, run_id))
            return self._run_state(ar, "kill", actor, finished_at=now)
        transition(ar.run.state, "kill")
        extra = self._pause_end(ar, now)
        ar.killing = True
        self._cancel_pending(ar, StepState.KILLED)
        for inst in ar.all_instances():
            if inst.proc is not None:
                inst.proc.kill()
            # running, paused, about to start, or a Slurm job waiting in the queue
            if inst.state in (StepState.RUNNING, StepState.PAUSED) or inst.proc is not None:
                inst.ended_at = now
                self._step_state(ar, inst, StepState.KILLED, actor)
        if not ar.running():
            ar.rundir.remove_work()
        self._op(run_id, lambda tx: forget_removed_files(tx, run_id))
        run = self._run_state(ar, "kill", actor, finished_at=now, **extra)
        self._plan()
        return run

    def _unqueue(self, run_id: str) -> None:
        """A queued run ends (held or not): it is not held again before that is committed."""
        if self.queued.pop(run_id, None) is None:
            self.queued.gone.add(run_id)
        self._plan()  # its owner's window may need reading again

    @staticmethod
    def _pause_end(ar: ActiveRun, now: datetime) -> dict[str, Any]:
        if ar.run.paused_at is None:
            return {}
        return {
            "paused_at": None,
            "paused_s": ar.run.paused_s + (now - ar.run.paused_at).total_seconds(),
        }
