"""Runs and steps: their states, the one transition policy, and their records.

Every change of a run's state goes through :data:`RUN_POLICY`: an ordered list of named
rules, each naming the action, the states it applies to and the state it enters.  The
same table is published at ``/api/v1/schema/run-states``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowdeck.errors import Conflict


class RunState(StrEnum):
    STAGED = "staged"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"
    SYSTEM_ERROR = "system_error"  # the manager, not the workflow, failed


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    KILLED = "killed"
    LOST = "lost"
    CACHED = "cached"


TERMINAL_STATES = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.KILLED,
        RunState.SYSTEM_ERROR,
    }
)
# States in which a run holds on to its workflow (and its owner's account).
ACTIVE_STATES = frozenset(set(RunState) - TERMINAL_STATES)
STEP_DONE = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.TIMED_OUT,
        StepState.SKIPPED,
        StepState.CANCELLED,
        StepState.KILLED,
        StepState.LOST,
        StepState.CACHED,
    }
)
STEP_OK = frozenset({StepState.SUCCEEDED, StepState.CACHED})


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: str
    sources: frozenset[RunState]
    target: RunState


def _rule(name: str, action: str, sources: set[RunState], target: RunState) -> Rule:
    return Rule(name, action, frozenset(sources), target)


S = RunState
RUN_POLICY: tuple[Rule, ...] = (
    # asked for by users
    _rule("stage", "stage", {S.STAGED}, S.STAGED),
    _rule("start", "start", {S.STAGED}, S.QUEUED),
    _rule("pause", "pause", {S.RUNNING}, S.PAUSED),
    _rule("resume", "resume", {S.PAUSED}, S.RUNNING),
    _rule("cancel-before-running", "stop", {S.STAGED, S.QUEUED}, S.CANCELLED),
    _rule("stop", "stop", {S.RUNNING, S.PAUSED}, S.STOPPING),
    _rule("kill", "kill", {S.STAGED, S.QUEUED, S.RUNNING, S.PAUSED, S.STOPPING}, S.KILLED),
    _rule("delete", "delete", set(TERMINAL_STATES), S.KILLED),  # target unused: the run goes
    # decided by the scheduler
    _rule("dispatch", "dispatch", {S.QUEUED}, S.RUNNING),
    _rule("succeed", "succeed", {S.RUNNING}, S.SUCCEEDED),
    _rule("fail", "fail", {S.RUNNING, S.PAUSED}, S.FAILED),
    _rule("stopped", "stopped", {S.STOPPING}, S.CANCELLED),
    _rule("fail-while-stopping", "fail", {S.STOPPING}, S.CANCELLED),
    _rule("system-error", "system_error", set(ACTIVE_STATES), S.SYSTEM_ERROR),
)
USER_ACTIONS = ("stage", "start", "pause", "resume", "stop", "kill", "delete")


class IllegalTransition(Conflict):
    """That action is not allowed in the run's current state."""

    code = "illegal_state"


def transition(current: RunState, action: str) -> Rule:
    """The first rule of the policy for ``action`` in state ``current``; 409 otherwise."""
    for rule in RUN_POLICY:
        if rule.action == action and current in rule.sources:
            return rule
    allowed = sorted({s.value for r in RUN_POLICY if r.action == action for s in r.sources})
    raise IllegalTransition(
        f"cannot {action} a run that is {current.value}"
        + (f" (allowed when {', '.join(allowed)})" if allowed else ""),
        state=current.value,
        action=action,
    )


def state_table() -> dict[str, Any]:
    """The published transition table."""
    return {
        "states": [s.value for s in RunState],
        "terminal": sorted(s.value for s in TERMINAL_STATES),
        "step_states": [s.value for s in StepState],
        "rules": [
            {
                "name": r.name,
                "action": r.action,
                "from": sorted(s.value for s in r.sources),
                "to": r.target.value,
                "by": "user" if r.action in USER_ACTIONS else "scheduler",
            }
            for r in RUN_POLICY
        ],
    }


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    owner_id: str
    workflow_id: str | None  # None once the workflow version is deleted
    workflow_ref: str  # owner/name@version, kept for the record
    state: RunState
    created_at: datetime
    state_since: datetime
    params: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    priority: int = 0  # set by its owner: orders only the owner's own runs
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    paused_at: datetime | None = None
    paused_s: float = 0.0  # time spent paused, excluded from the running time
    pause_mode: str | None = None
    error: dict[str, Any] | None = None  # {"step", "message"} of what ended it
    outputs: dict[str, Any] = field(default_factory=dict)
    owner_instance: str | None = None  # the server instance running it (see domain.leases)
    fence: int = 0  # incremented by every takeover
    keep: bool = False  # exempt from retention (docs/operations.md, Retention)
    files_purged_at: datetime | None = None  # when retention removed its folder
    admin_priority: int = 0  # set by an admin: orders runs of every user (fair share after)
    waiting: str | None = None  # why a queued run does not start yet (its owner's quota)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def running_s(self, now: datetime) -> float:
        """Time spent running, paused time excluded."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at or now
        paused = self.paused_s + (
            (now - self.paused_at).total_seconds()
            if self.paused_at and not self.finished_at
            else 0.0
        )
        return max(0.0, (end - self.started_at).total_seconds() - paused)


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    name: str
    index: int  # -1 for a step without foreach, else the instance's position
    state: StepState
    state_since: datetime
    attempts: int = 0
    item: Any = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    max_rss_kb: int | None = None
    cpu_time_s: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    job_id: str | None = None  # the latest attempt's job in its executor (a Slurm job id)
    # Why a submitted attempt waits in its executor's queue (Slurm's reason: "Resources",
    # "Priority", ...); set only while the step is ``pending`` with its job submitted.
    waiting: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.index < 0 else f"{self.name}[{self.index}]"

    @property
    def in_queue(self) -> bool:
        """Submitted and waiting in its executor's queue (a pending Slurm job): pending,
        but its attempt exists and ends like a running one."""
        return self.state is StepState.PENDING and self.waiting is not None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    subject_kind: str  # "run" (a "graph" later)
    subject_id: str
    seq: int  # per subject, from 1, without gaps
    type: str  # "run.running", "step.failed", …
    at: datetime
    actor: str | None  # a username, or None for flowdeck itself
    data: dict[str, Any] = field(default_factory=dict)
    owner_id: str | None = None  # the subject's owner: who may see the event


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    run_id: str
    name: str  # "step.output" or "step.output[i]"
    path: str  # relative to the run directory
    size: int
    sha256: str
    media_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StagedFile:
    run_id: str
    input: str
    filename: str
    path: str  # absolute path the step sees
    size: int
    sha256: str | None
    source: str  # "upload", "data_root" or "product:<run>/<name>"
    created_at: datetime
