"""Runs of workflows: their states and records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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
    priority: int = 0
