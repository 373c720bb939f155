"""Request and response bodies of the runs API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from flowdeck import clock
from flowdeck.api.schemas import Request
from flowdeck.api.schemas_webhooks import CallbackIn, CallbackOut
from flowdeck.domain.ports import StreamPort
from flowdeck.domain.runs import (
    STEP_DONE,
    Event,
    Product,
    Run,
    RunState,
    StagedFile,
    StepRecord,
    StepState,
)
from flowdeck.domain.spec import DURATION_PATTERN, SIZE_PATTERN
from flowdeck.domain.text import FILE_NAME_PATTERN, SAFE_TEXT_PATTERN
from flowdeck.domain.workflows import REF_PATTERN
from flowdeck.engines.cwl_names import JOB_INPUT, REQUEST_INPUT
from flowdeck.runtime.steps import tail

# A variable name; the FLOWDECK_ ones are the server's (the service refuses them: pydantic's
# patterns have no look-ahead, the document's has).
ENV_NAME_PATTERN = "^(?!FLOWDECK_)[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, Field(pattern="^[A-Za-z_][A-Za-z0-9_]*$")]
# Names without control or bidirectional characters: the service refuses them with a
# message that names the character, the document says so too.
Tag = Annotated[str, Field(json_schema_extra={"pattern": SAFE_TEXT_PATTERN})]
_SEGMENT = FILE_NAME_PATTERN.removeprefix("^").removesuffix("$")
# a plain file name; for the input cwl_files of a CWL workflow, a relative path
FILE_NAME: JsonDict = {
    "pattern": f"^{_SEGMENT}(/{_SEGMENT})*$",
    "description": "The file's name; for the input cwl_files of a CWL workflow, its relative "
    "path as the run's CWL job document names it (no '..', no absolute path).",
}


class ResourcesIn(Request):
    executor: Literal["local", "inprocess", "slurm", "dask"] | None = Field(
        None,
        description="local, inprocess, or slurm or dask where the server offers them "
        "(slurm = true, dask = true; dask only for the users in dask_users if set); "
        "default: the server's default_executor.",
    )
    cpus: float | None = Field(
        None, gt=0, le=1e6, description="CPUs the run's steps may use at once."
    )
    memory: (
        Annotated[int, Field(gt=0, le=2**42)]
        | Annotated[str, Field(pattern=SIZE_PATTERN, max_length=64)]
        | None
    ) = Field(None, description="Per step: MiB, or '2GiB'.")
    walltime: (
        Annotated[float, Field(gt=0, allow_inf_nan=False)]
        | Annotated[str, Field(pattern=DURATION_PATTERN, max_length=64)]
        | None
    ) = Field(None, description="The whole run: seconds, or '2h'.")
    priority: int | None = Field(None, ge=-100, le=100, description="Higher starts first.")
    env: dict[EnvName, str] | None = Field(
        None,
        description="Extra environment for every step; no FLOWDECK_ names.",
        json_schema_extra={"propertyNames": {"pattern": ENV_NAME_PATTERN}},
    )
    slurm_options: dict[Annotated[str, Field(max_length=40)], bool | str | int] | None = Field(
        None,
        max_length=20,
        description="On Slurm: sbatch options for every job of the run, by long name "
        "({'constraint': 'avx2', 'exclusive': true}); only those the server allows "
        "(slurm_user_options), else 422 naming them.",
    )


class RunCreate(Request):
    workflow: str = Field(
        max_length=200,
        description="name@version or owner/name@version",
        json_schema_extra={"pattern": REF_PATTERN},  # the service checks it
    )
    params: dict[str, Any] | None = None
    resources: ResourcesIn | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    start: bool = Field(False, description="Queue it at once.")
    callbacks: list[CallbackIn] | None = Field(
        None, max_length=10, description="Webhooks for this run's events, made with it."
    )


class KeepIn(Request):
    keep: bool = Field(description="true: exempt the run from retention; false: no longer.")


class PauseIn(Request):
    mode: Literal["freeze", "drain"] = "freeze"


class StopIn(Request):
    grace_s: float | None = Field(None, ge=0, le=3600)


class ReferenceIn(Request):
    data_path: str | None = Field(
        None, max_length=4096, description="A path under the server's data root."
    )
    run: str | None = Field(None, max_length=40, description="Another run of yours…")
    product: str | None = Field(
        None, max_length=200, description="…and its product (id or name): snapshot taken now."
    )


class Progress(BaseModel):
    done: int
    total: int
    fraction: float


class RunSummary(BaseModel):
    id: str
    workflow: str
    owner_id: str
    state: str
    state_since: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tags: list[str]
    priority: int = Field(description="Set by the owner: orders only the owner's own runs.")
    admin_priority: int = Field(
        0, description="Set by an admin: orders runs of every user, before fair share."
    )
    waiting: str | None = Field(
        None,
        description="A queued run held back by its owner's quota: why "
        "('quota: 2 of 2 active runs').",
    )

    @classmethod
    def of(cls, run: Run) -> Self:
        return cls(**cls.fields_of(run))

    @staticmethod
    def fields_of(run: Run) -> dict[str, Any]:
        return dict(
            id=run.id,
            workflow=run.workflow_ref,
            owner_id=run.owner_id,
            state=run.state.value,
            state_since=run.state_since,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            tags=run.tags,
            priority=run.priority,
            admin_priority=run.admin_priority,
            waiting=run.waiting if run.state is RunState.QUEUED else None,
        )


class PortOut(BaseModel):
    name: str
    direction: Literal["input", "output"]
    url: str = Field(description="POST records to an input, GET (or SSE, WebSocket) an output.")
    records: int = Field(description="Records stored so far: the next offset.")
    closed: bool = Field(description="No more records will come (or be accepted).")

    @classmethod
    def of(cls, port: StreamPort, run: Run) -> PortOut:
        kind = "inputs" if port.direction == "input" else "outputs"
        return cls(
            name=port.name,
            direction=port.direction,
            url=f"/api/v1/runs/{run.id}/{kind}/{port.name}",
            records=port.length,
            closed=port.closed or not run.active,
        )


def sent_job(params: dict[str, Any]) -> dict[str, Any] | None:
    """The CWL job document a run was given, as sent (the generated CWL inputs)."""
    if not isinstance(params.get(JOB_INPUT), str) or REQUEST_INPUT not in params:
        return None
    try:
        job = json.loads(str(params[REQUEST_INPUT]))
    except ValueError:
        return None
    return job if isinstance(job, dict) else None


class RunOut(RunSummary):
    queued_at: datetime | None
    running_s: float = Field(description="Time spent running, paused time excluded.")
    paused_s: float
    pause_mode: str | None
    params: dict[str, Any]
    resources: dict[str, Any]
    steps: dict[str, int] = Field(description="Step instances counted by state.")
    progress: Progress
    current_steps: list[str]
    error: dict[str, Any] | None
    outputs: dict[str, Any]
    ports: list[PortOut] = Field(
        default_factory=list, description="Stream inputs and outputs, with their URLs."
    )
    children: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Child runs of uses: steps (step, index, run_id, state, steps, children).",
    )
    keep: bool = Field(False, description="Exempt from retention (PUT /runs/{id}/keep).")
    files_purged_at: datetime | None = Field(
        None, description="When retention removed the run's folder (logs, products)."
    )
    cwl_job: dict[str, Any] | None = Field(
        None,
        description="A CWL run's job document as sent (its relative locations name the "
        "files staged in cwl_files, GET /runs/{id}/files); null for other runs.",
    )

    @classmethod
    def of(
        cls,
        run: Run,
        counts: dict[str, int] | None = None,
        current: list[str] | None = None,
        ports: list[StreamPort] | None = None,
        **extra: Any,
    ) -> Self:
        counts = counts or {}
        done = sum(n for state, n in counts.items() if StepState(state) in STEP_DONE)
        total = sum(counts.values())
        now = clock.now()
        paused = run.paused_s + (
            (now - run.paused_at).total_seconds() if run.paused_at and not run.finished_at else 0.0
        )
        return cls(
            **RunSummary.fields_of(run),
            queued_at=run.queued_at,
            running_s=round(run.running_s(now), 3),
            paused_s=round(paused, 3),
            pause_mode=run.pause_mode,
            params=run.params,
            resources=run.resources,
            steps=dict(counts),
            progress=Progress(
                done=done, total=total, fraction=round(done / total, 4) if total else 0.0
            ),
            current_steps=current or [],
            error=run.error,
            outputs=run.outputs,
            ports=[PortOut.of(p, run) for p in ports or []],
            keep=run.keep,
            files_purged_at=run.files_purged_at,
            cwl_job=sent_job(run.params),
            **extra,
        )


class RunCreated(RunOut):
    callbacks: list[CallbackOut] = Field(
        default_factory=list, description="The run's webhooks, with their secrets (shown once)."
    )


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None


class StepOut(BaseModel):
    name: str
    index: int | None
    label: str
    state: str
    state_since: datetime
    attempts: int
    item: Any
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    max_rss_kb: int | None
    cpu_time_s: float | None
    outputs: dict[str, Any]
    error: str | None
    log_tail: str
    run_id: str | None = Field(None, description="The run of a nested (sub-workflow) step.")
    slurm_job: str | None = Field(
        None, description="A step on Slurm: the job id of its latest attempt, once submitted."
    )
    slurm_state: str | None = Field(
        None,
        description="A step on Slurm whose job is under way: its job's state as the last "
        "poll saw it (PENDING, RUNNING, SUSPENDED, ...).",
    )
    slurm_reason: str | None = Field(
        None,
        description="A step on Slurm that is pending with its job submitted: why the job "
        "waits in Slurm's queue (Resources, Priority, ...; 'requeued' after a preemption).",
    )
    dask_task: str | None = Field(
        None, description="A step on Dask: the task key of its latest attempt, once submitted."
    )
    dask_reason: str | None = Field(
        None,
        description="A step on Dask that is pending with its task submitted: why no worker "
        "runs it ('no Dask worker offers cpus=8', 'the Dask scheduler cannot be reached').",
    )

    @classmethod
    def of(cls, rec: StepRecord, stderr: Any, stdout: Any) -> StepOut:
        duration = (
            (rec.ended_at - rec.started_at).total_seconds()
            if rec.started_at and rec.ended_at
            else None
        )
        text = (tail(stdout, 1000) + tail(stderr, 1000)) if rec.attempts else ""
        return cls(
            name=rec.name,
            index=rec.index if rec.index >= 0 else None,
            label=rec.label,
            state=rec.state.value,
            state_since=rec.state_since,
            attempts=rec.attempts,
            item=rec.item,
            exit_code=rec.exit_code,
            signal=rec.signal,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            duration_s=duration,
            max_rss_kb=rec.max_rss_kb,
            cpu_time_s=rec.cpu_time_s,
            outputs=rec.outputs,
            error=rec.error,
            log_tail=text[-2000:],
        )


def staged_url(f: StagedFile) -> str:
    """Where a staged file is downloaded from."""
    return f"/api/v1/runs/{f.run_id}/files/{quote(f.input)}?filename={quote(f.filename)}"


class StagedFileOut(BaseModel):
    input: str
    filename: str
    size: int
    sha256: str | None
    source: str
    created_at: datetime
    url: str = Field(description="GET it to download the file.")

    @classmethod
    def of(cls, f: StagedFile) -> StagedFileOut:
        return cls(
            input=f.input,
            filename=f.filename,
            size=f.size,
            sha256=f.sha256,
            source=f.source,
            created_at=f.created_at,
            url=staged_url(f),
        )


class ProductOut(BaseModel):
    id: str
    name: str
    size: int
    sha256: str
    media_type: str
    created_at: datetime
    url: str

    @classmethod
    def of(cls, p: Product) -> ProductOut:
        return cls(
            id=p.id,
            name=p.name,
            size=p.size,
            sha256=p.sha256,
            media_type=p.media_type,
            created_at=p.created_at,
            url=f"/api/v1/runs/{p.run_id}/products/{p.id}",
        )


class EventOut(BaseModel):
    id: int
    run_id: str = Field(description="The subject's id (a run's, or a graph's).")
    subject_kind: str = Field("run", description="run or graph")
    seq: int
    type: str
    at: datetime
    actor: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id,
            run_id=e.subject_id,
            subject_kind=e.subject_kind,
            seq=e.seq,
            type=e.type,
            at=e.at,
            actor=e.actor,
            data=e.data,
        )


class ValidateOut(BaseModel):
    ok: bool
    problems: list[dict[str, str]]


class PushOut(BaseModel):
    port: str
    first: int = Field(description="Offset of the first record stored.")
    last: int = Field(description="Offset of the last record stored.")
    records: int = Field(description="Records in the port now.")


class PortStateOut(BaseModel):
    port: str
    records: int
    closed: bool


class RecordOut(BaseModel):
    offset: int
    attempt: int | None = Field(description="Output records: the step attempt that wrote it.")
    data: Any


class RecordPage(BaseModel):
    port: str
    records: list[RecordOut]
    next: int = Field(description="The offset to read from next.")
    closed: bool = Field(description="The producing step ended: no more records will come.")
