"""Response bodies of the GA4GH WES 1.1 routes (for flowdeck's OpenAPI document; the
fields follow the WES specification, unset ones are left out)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowdeck.domain.wes import ALL_WES_STATES


class _Wes(BaseModel):
    model_config = ConfigDict(extra="allow")


STATE_DOC = "One of " + ", ".join(ALL_WES_STATES) + " (see docs/wes.md)."


class RunId(_Wes):
    run_id: str


class RunStatus(_Wes):
    run_id: str
    state: str = Field(description=STATE_DOC)


class RunSummary(RunStatus):
    start_time: str | None = None
    end_time: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RunListResponse(_Wes):
    runs: list[RunSummary]
    next_page_token: str = Field(description="Empty: no more pages.")


class Log(_Wes):
    name: str | None = None
    cmd: list[str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    system_logs: list[str] | None = None


class TaskLog(Log):
    id: str
    name: str


class TaskListResponse(_Wes):
    task_logs: list[TaskLog]
    next_page_token: str


class RunRequest(_Wes):
    workflow_params: dict[str, Any] = Field(default_factory=dict)
    workflow_type: str
    workflow_type_version: str
    tags: dict[str, str] = Field(default_factory=dict)
    workflow_engine: str | None = None
    workflow_url: str


class RunLog(_Wes):
    run_id: str
    request: RunRequest
    state: str = Field(description=STATE_DOC)
    run_log: Log
    task_logs_url: str
    outputs: dict[str, Any]


class ErrorResponse(_Wes):
    msg: str
    status_code: int


WES_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": "WES ErrorResponse"}
    for code in (400, 401, 403, 404, 500)
}
