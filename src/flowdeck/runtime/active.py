"""The scheduler's in-memory picture of an active run and its step instances."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flowdeck.domain.runs import STEP_DONE, STEP_OK, Run, StepRecord, StepState
from flowdeck.domain.spec import StepSpec, WorkflowSpec
from flowdeck.executors.base import StepProcess
from flowdeck.runtime.rundir import RunDir

FAILURES = frozenset(
    {StepState.FAILED, StepState.TIMED_OUT, StepState.KILLED, StepState.LOST, StepState.CANCELLED}
)


@dataclass
class Instance:
    step: str
    index: int  # -1 without foreach
    item: Any
    cpus: float
    state: StepState = StepState.PENDING
    state_since: datetime | None = None
    attempts: int = 0
    proc: StepProcess | None = None
    executor: str = "local"
    waiting_retry: bool = False
    retry_timer: asyncio.TimerHandle | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    signal: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    max_rss_kb: int | None = None
    cpu_time_s: float | None = None
    error: str | None = None
    job_id: str | None = None  # the latest attempt's Slurm job
    waiting: str | None = None  # why its submitted job waits in Slurm's queue
    # the values of the secrets the running attempt got, and the files they went in (to
    # mask and remove when it ends); never shown
    secret_values: list[str] = field(default_factory=list, repr=False)
    secret_files: list[Path] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return self.step if self.index < 0 else f"{self.step}[{self.index}]"

    @property
    def done(self) -> bool:
        return self.state in STEP_DONE

    @property
    def startable(self) -> bool:
        """Pending and not started: neither waiting for a retry nor submitted (a pending
        Slurm job is pending too, with its attempt under way)."""
        return self.state is StepState.PENDING and not self.waiting_retry and self.proc is None

    def record(self, run_id: str, now: datetime) -> StepRecord:
        return StepRecord(
            run_id=run_id,
            name=self.step,
            index=self.index,
            state=self.state,
            state_since=self.state_since or now,
            attempts=self.attempts,
            item=self.item,
            exit_code=self.exit_code,
            signal=self.signal,
            started_at=self.started_at,
            ended_at=self.ended_at,
            max_rss_kb=self.max_rss_kb,
            cpu_time_s=self.cpu_time_s,
            outputs=self.outputs,
            error=self.error,
            job_id=self.job_id,
            waiting=self.waiting,
        )


@dataclass
class ActiveRun:
    run: Run
    spec: WorkflowSpec
    deps: dict[str, frozenset[str]]
    order: tuple[str, ...]
    rundir: RunDir
    code_dir: Path | None
    executor: str
    cpus: float
    extra_env: dict[str, str]
    fence: int = 0  # the run's fence while this instance owns it
    cursor: dict[str, int] = field(default_factory=dict)  # step -> its first not-done instance
    instances: dict[str, list[Instance]] = field(default_factory=dict)
    resolved: dict[str, StepState] = field(default_factory=dict)  # skipped/cancelled whole
    used: float = 0.0
    failure: dict[str, Any] | None = None
    killing: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def step(self, name: str) -> StepSpec:
        return self.spec.steps[name]

    def all_instances(self) -> list[Instance]:
        return [i for group in self.instances.values() for i in group]

    def running(self) -> list[Instance]:
        return [i for i in self.all_instances() if i.proc is not None]

    def aggregate(self, name: str) -> StepState:
        """The state of a whole step (all its instances)."""
        if name in self.resolved:
            return self.resolved[name]
        group = self.instances.get(name)
        if group is None:
            return StepState.PENDING
        if not group:
            return StepState.SUCCEEDED  # foreach over an empty array
        if not self.all_done(name):
            return StepState.RUNNING
        if all(i.state in STEP_OK for i in group):
            return StepState.SUCCEEDED
        return next(i.state for i in group if i.state not in STEP_OK)

    def outputs_of(self, name: str) -> dict[str, Any]:
        """A step's outputs; a scattered step's are arrays in element order."""
        group = self.instances.get(name) or []
        if self.step(name).foreach is None:
            return group[0].outputs if group else {}
        return {out: [i.outputs.get(out) for i in group] for out in self.step(name).outputs}

    def all_outputs(self) -> dict[str, dict[str, Any]]:
        return {name: self.outputs_of(name) for name in self.instances}

    def all_done(self, name: str) -> bool:
        """Whether every instance of a step is done, looking from its cursor on: a done
        instance never runs again, so a wide scatter is not rescanned at every tick."""
        group = self.instances[name]
        start = self.cursor.get(name, 0)
        while start < len(group) and group[start].done:
            start += 1
        self.cursor[name] = start
        return start == len(group)

    def finished(self) -> bool:
        return (
            all(
                name in self.resolved or (name in self.instances and self.all_done(name))
                for name in self.spec.steps
            )
            and not self.running()
        )
