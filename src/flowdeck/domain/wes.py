"""flowdeck's run states as GA4GH WES states: the one mapping (docs/wes.md shows it)."""

from __future__ import annotations

from flowdeck.domain.runs import RunState

WES_STATES: dict[RunState, str] = {
    RunState.STAGED: "INITIALIZING",
    RunState.QUEUED: "QUEUED",
    RunState.RUNNING: "RUNNING",
    RunState.PAUSED: "PAUSED",
    RunState.STOPPING: "CANCELING",
    RunState.SUCCEEDED: "COMPLETE",
    RunState.FAILED: "EXECUTOR_ERROR",  # a step failed or timed out
    RunState.CANCELLED: "CANCELED",
    RunState.KILLED: "CANCELED",
    RunState.SYSTEM_ERROR: "SYSTEM_ERROR",
}
ALL_WES_STATES = (
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "CANCELING",
    "PREEMPTED",
)


def wes_state(state: RunState) -> str:
    return WES_STATES.get(state, "UNKNOWN")
