"""News of an attempt's job in a cluster's queue (a Slurm job): submitted, waiting, running.
The scheduler's part of :meth:`flowdeck.executors.base.StepProcess.watch`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowdeck import clock
from flowdeck.domain.runs import StepState
from flowdeck.runtime.active import ActiveRun, Instance

if TYPE_CHECKING:
    from flowdeck.runtime.core import SchedulerCore


def queue_news(
    core: SchedulerCore, ar: ActiveRun, inst: Instance, job_id: str, waiting: str | None
) -> None:
    """An attempt's job was submitted (``job_id``), or it waits in the cluster's queue
    (``waiting``: why) or runs (None): its step is ``pending`` while its job waits
    (again, when Slurm requeues it), ``running`` while it runs; a frozen one stays
    ``paused``.  Each change is recorded with the step, the job id too."""
    if inst.proc is None or core.active.get(ar.run.id) is not ar:
        return  # it ended meanwhile, or the run is someone else's now
    before = (inst.job_id, inst.waiting, inst.state)
    inst.job_id = job_id
    if inst.state is StepState.PAUSED:
        inst.waiting = waiting
    elif waiting is not None:
        inst.waiting = waiting
        if inst.state is StepState.RUNNING:
            core._step_state(ar, inst, StepState.PENDING, waiting=waiting, job=job_id)
    elif inst.state is StepState.PENDING:
        inst.waiting = None
        inst.started_at = clock.now()  # its job left the queue: it starts now
        core._step_state(ar, inst, StepState.RUNNING, job=job_id)
    if (inst.job_id, inst.waiting, inst.state) != before:
        core._save(inst.record(ar.run.id, clock.now()))
        core._plan()  # the next tick commits it
