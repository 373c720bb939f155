"""/api/v1/runs: the run lifecycle — create, stage, resources, validate, start, status,
steps and logs, list, pause/resume/stop/kill, products, delete."""

from __future__ import annotations

import hashlib
import mimetypes
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, cast

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from flowdeck.api.deps import ActorDep, CtxDep, hot_read
from flowdeck.api.downloads import download
from flowdeck.api.files_view import shown, shown_steps, zip_members
from flowdeck.api.params import DateTime, check_cursor, cursor_query
from flowdeck.api.schemas_runs import (
    FILE_NAME,
    KeepIn,
    PauseIn,
    ProductOut,
    ReferenceIn,
    ResourcesIn,
    RunCreate,
    RunCreated,
    RunOut,
    RunPage,
    RunSummary,
    StagedFileOut,
    StepOut,
    StopIn,
    ValidateOut,
)
from flowdeck.api.schemas_webhooks import CallbackOut
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import RunState, StepState, state_table
from flowdeck.errors import NotFound, PayloadTooLarge
from flowdeck.executors.dask_tasks import Files as DaskFiles
from flowdeck.executors.slurm_jobs import Files as SlurmFiles
from flowdeck.services import subflows
from flowdeck.services.context import Context

router = APIRouter(tags=["runs"])
LOG_CHUNK = 1 << 20


@router.get("/schema/run-states", tags=["schema"])
async def run_states() -> dict[str, Any]:
    """Which action is legal in which state (public)."""
    return state_table()


@router.post("/runs", status_code=201, response_model=RunCreated)
async def create_run(body: RunCreate, ctx: CtxDep, actor: ActorDep) -> Response:
    """A new run of a workflow you can read, `staged` (or `queued` with `start: true`);
    `callbacks` subscribe webhooks to its events (their secrets are in the answer)."""
    resources = body.resources.model_dump(exclude_none=True) if body.resources else None
    if body.callbacks:  # checking their URLs resolves names: not in the event loop
        out = await run_in_threadpool(_create_with_callbacks, body, ctx, actor, resources)
    else:
        run = await ctx.runs.create_async(
            actor, body.workflow, body.params, resources, body.tags, body.start
        )
        out = shown(ctx, RunCreated.of(run))
    # Built and checked once (the hot path of a submission), not re-validated by FastAPI.
    return Response(out.model_dump_json(), 201, media_type="application/json")


def _create_with_callbacks(
    body: RunCreate, ctx: Context, actor: Actor, resources: dict[str, Any] | None
) -> RunCreated:
    subs = ctx.webhooks.callbacks(actor, [(c.url, c.events) for c in body.callbacks or []])
    run = ctx.runs.create(
        actor, body.workflow, body.params, resources, body.tags, body.start, callbacks=subs
    )
    return shown(ctx, RunCreated.of(run, callbacks=[CallbackOut.of(s) for s in subs]))


@router.patch("/runs/{run_id}/params", response_model=RunOut)
def stage_params(
    run_id: str, ctx: CtxDep, actor: ActorDep, values: Annotated[dict[str, Any], Body()]
) -> RunOut:
    """Merge parameter values (null removes one); each is checked against its input."""
    return shown(ctx, RunOut.of(ctx.runs.stage_params(actor, run_id, values)))


@router.put(
    "/runs/{run_id}/files/{input}",
    status_code=201,
    response_model=StagedFileOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_file(
    run_id: str,
    input: str,
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    filename: Annotated[str, Query(min_length=1, max_length=1024, json_schema_extra=FILE_NAME)],
) -> StagedFileOut:
    """Stream a file for a file input (the body is the file); replaces one of the same
    name. 413 past the server's upload limit."""
    await run_in_threadpool(ctx.runs.staged_files, actor, run_id)  # 404 before reading
    limit = ctx.settings.max_upload_bytes
    folder = ctx.runs.upload_dir()  # swept at start: an interrupted upload leaves nothing
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False) as out:
        temp = Path(out.name)
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"file larger than {limit} bytes", limit_bytes=limit)
                digest.update(chunk)
                out.write(chunk)
        except BaseException:
            temp.unlink(missing_ok=True)  # noqa: ASYNC240
            raise
    try:
        staged = await run_in_threadpool(
            ctx.runs.stage_file, actor, run_id, input, filename, temp, size, digest.hexdigest()
        )
    finally:
        temp.unlink(missing_ok=True)  # noqa: ASYNC240 - gone already unless staging failed
    return StagedFileOut.of(staged)


@router.post(
    "/runs/{run_id}/files/{input}/reference", status_code=201, response_model=StagedFileOut
)
def reference_file(
    run_id: str, input: str, body: ReferenceIn, ctx: CtxDep, actor: ActorDep
) -> StagedFileOut:
    """A file under the data root (read in place), or a snapshot of another run's product."""
    staged = ctx.runs.reference(
        actor, run_id, input, data_path=body.data_path, product_run=body.run, product=body.product
    )
    return StagedFileOut.of(staged)


@router.delete("/runs/{run_id}/files/{input}", status_code=204)
def delete_file(
    run_id: str,
    input: str,
    ctx: CtxDep,
    actor: ActorDep,
    filename: Annotated[str, Query(min_length=1, max_length=1024, json_schema_extra=FILE_NAME)],
) -> Response:
    ctx.runs.unstage_file(actor, run_id, input, filename)
    return Response(status_code=204)


@router.get("/runs/{run_id}/files", response_model=list[StagedFileOut])
def list_files(run_id: str, ctx: CtxDep, actor: ActorDep) -> list[StagedFileOut]:
    return [StagedFileOut.of(f) for f in ctx.runs.staged_files(actor, run_id)]


@router.get("/runs/{run_id}/files/{input}", response_class=FileResponse)
def download_file(
    run_id: str,
    input: str,
    ctx: CtxDep,
    actor: ActorDep,
    filename: Annotated[str, Query(min_length=1, max_length=1024, json_schema_extra=FILE_NAME)],
) -> FileResponse:
    """A staged file, as an attachment (the `url` of its listing entry, and of the file
    parameters of the run's status)."""
    for f in ctx.runs.staged_files(actor, run_id):
        if (f.input, f.filename) == (input, filename) and Path(f.path).is_file():
            media = mimetypes.guess_type(f.filename)[0] or "application/octet-stream"
            return download(Path(f.path), media_type=media, filename=f.filename)
    raise NotFound(f"run {run_id} has no file {filename!r} staged for {input!r}")


@router.put("/runs/{run_id}/resources", response_model=RunOut)
def set_resources(run_id: str, body: ResourcesIn, ctx: CtxDep, actor: ActorDep) -> RunOut:
    """Executor (`local` or `inprocess`), cpus, memory, walltime, priority, extra env."""
    return shown(
        ctx, RunOut.of(ctx.runs.set_resources(actor, run_id, body.model_dump(exclude_none=True)))
    )


@router.put("/runs/{run_id}/keep", response_model=RunOut)
def set_keep(run_id: str, body: KeepIn, ctx: CtxDep, actor: ActorDep) -> RunOut:
    """Exempt the run from retention (`{"keep": true}`), or no longer (`false`)."""
    return shown(ctx, RunOut.of(ctx.runs.set_keep(actor, run_id, body.keep)))


@router.post("/runs/{run_id}/validate", response_model=ValidateOut)
def validate_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> ValidateOut:
    """Dry run of start: required inputs present, resources allowed."""
    problems = ctx.runs.validate(actor, run_id)
    return ValidateOut(ok=not problems, problems=problems)


@router.post("/runs/{run_id}/start", response_model=RunOut)
def start_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> RunOut:
    return shown(ctx, RunOut.of(ctx.runs.start(actor, run_id)))


@router.get("/runs", response_model=RunPage)
def list_runs(
    ctx: CtxDep,
    actor: ActorDep,
    state: Annotated[list[RunState] | None, Query()] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Admins only.")] = None,
    created_after: DateTime | None = None,
    created_before: DateTime | None = None,
    cursor: Annotated[
        str | None, cursor_query("run", "Cursor: next_cursor of the previous page.")
    ] = None,
    search: Annotated[
        str | None,
        Query(max_length=200, description="Text in the run id, workflow reference or a tag."),
    ] = None,
    sort: Annotated[
        str,
        Query(
            pattern="^-?(created|workflow|state)$",
            description="created, workflow or state (then the id); a leading - descends.",
        ),
    ] = "-created",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Runs you may see (admins: all), filtered, a page at a time."""
    check_cursor(cursor, "run", "cursor")
    items = ctx.runs.list_runs(
        actor,
        owner=owner,
        states=state,
        workflow=workflow,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
        after_id=cursor,
        newest_first=sort.startswith("-"),
        limit=limit,
        search=search or None,
        order_by=sort.lstrip("-"),
    )
    nxt = items[-1].id if len(items) == limit else None
    return _json(RunPage(items=[RunSummary.of(r) for r in items], next_cursor=nxt))


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> Response:
    """State, times, running time (paused time excluded), step counts, progress, errors,
    and the child runs of its `uses:` steps, nested."""
    return _json(await hot_read(ctx, _run_status, ctx, actor, run_id))


def _run_status(ctx: Context, actor: Actor, run_id: str) -> RunOut:
    run, counts, current, ports, children = subflows.status_with_children(ctx.runs, actor, run_id)
    out = shown(ctx, RunOut.of(run, counts, current, ports))
    out.children = children
    return out


def _json(model: BaseModel) -> Response:
    """A model built and checked by the route, answered as is: the hot reads (status, the
    run list) are not validated a second time by FastAPI against their response model."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/runs/{run_id}/steps", response_model=list[StepOut])
def get_steps(run_id: str, ctx: CtxDep, actor: ActorDep) -> list[StepOut]:
    """Its steps; after a `uses:` step, the steps of its child run (label `step/inner`)."""
    view = ctx.runs.get(actor, run_id)  # 404 unless visible
    on_slurm = view.run.resources.get("executor") == "slurm"
    on_dask = view.run.resources.get("executor") == "dask"
    with ctx.store.read() as tx:
        nested = subflows.nested_steps(tx, run_id)
    out = []
    for prefix, s in nested:
        rd = ctx.runs.rundir(s.run_id)
        stdout = rd.log(s.name, s.index, max(s.attempts, 1), "stdout")
        step = StepOut.of(s, rd.log(s.name, s.index, max(s.attempts, 1), "stderr"), stdout)
        if prefix:
            step.label, step.run_id = prefix + step.label, s.run_id
        elif on_slurm and s.attempts:
            files = SlurmFiles.of(stdout)
            # the job id is stored with the step once the submission is committed; the run
            # folder has it as soon as sbatch answered
            step.slurm_job = s.job_id or files.job_id()
            live = s.state in (StepState.RUNNING, StepState.PENDING, StepState.PAUSED)
            seen = files.seen_state() if live else None
            if seen is not None:
                step.slurm_state = seen[0]
            step.slurm_reason = s.waiting
        elif on_dask and s.attempts:
            submitted = DaskFiles.of(stdout).job()
            step.dask_task = s.job_id or (submitted[0] if submitted else None)
            step.dask_reason = s.waiting
        out.append(step)
    return shown_steps(ctx, out, run_id)


# The parameters of a step's log (here and under the WES prefix).
LogStream = Annotated[str, Query(pattern="^(stdout|stderr)$")]
LogIndex = Annotated[int, Query(ge=-1, le=10**9)]
LogAttempt = Annotated[int | None, Query(ge=1, le=10**6)]
LogOffset = Annotated[int, Query(ge=0, le=2**62)]


@router.get("/runs/{run_id}/steps/{step}/logs")
def step_logs(
    run_id: str,
    step: str,
    ctx: CtxDep,
    actor: ActorDep,
    stream: LogStream = "stdout",
    index: LogIndex = -1,
    attempt: LogAttempt = None,
    offset: LogOffset = 0,
) -> Response:
    """A piece of a step's log from `offset`; `X-Next-Offset` says where to go on."""
    path = ctx.runs.log(actor, run_id, step, index, attempt, stream)
    data = b""
    if path.is_file():
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(offset + len(data))},
    )


@router.get("/runs/{run_id}/steps/{step}/log.txt", response_class=FileResponse)
def step_log_file(
    run_id: str,
    step: str,
    ctx: CtxDep,
    actor: ActorDep,
    stream: LogStream = "stdout",
    index: LogIndex = -1,
    attempt: LogAttempt = None,
    download: Annotated[bool, Query(description="As an attachment (a file to save).")] = False,
) -> Response:
    """A step's whole log as it is now (plain text; empty before the step wrote)."""
    path = ctx.runs.log(actor, run_id, step, index, attempt, stream)
    name = f"{run_id}-{step}{'' if index < 0 else f'-{index}'}-{stream}.log"
    if not path.is_file():
        return Response(b"", media_type="text/plain; charset=utf-8")
    return FileResponse(
        path,
        media_type="text/plain; charset=utf-8",
        filename=name if download else None,
        content_disposition_type="attachment" if download else "inline",
    )


@router.post("/runs/{run_id}/pause", response_model=RunOut)
def pause_run(
    run_id: str, ctx: CtxDep, actor: ActorDep, body: Annotated[PauseIn | None, Body()] = None
) -> RunOut:
    """`freeze` (SIGSTOP running steps) or `drain` (let them finish); no new step starts."""
    mode = body.mode if body else "freeze"
    return shown(ctx, RunOut.of(ctx.runs.control(actor, run_id, "pause", mode=mode)))


@router.post("/runs/{run_id}/resume", response_model=RunOut)
def resume_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> RunOut:
    return shown(ctx, RunOut.of(ctx.runs.control(actor, run_id, "resume")))


@router.post("/runs/{run_id}/stop", response_model=RunOut)
def stop_run(
    run_id: str, ctx: CtxDep, actor: ActorDep, body: Annotated[StopIn | None, Body()] = None
) -> RunOut:
    """Graceful: SIGTERM, then SIGKILL after `grace_s`; products are kept."""
    grace = body.grace_s if body and body.grace_s is not None else ctx.settings.stop_grace_s
    return shown(ctx, RunOut.of(ctx.runs.control(actor, run_id, "stop", grace_s=grace)))


@router.post("/runs/{run_id}/kill", response_model=RunOut)
def kill_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> RunOut:
    """SIGKILL everything now and delete the run's work files (record, events, logs stay)."""
    return shown(ctx, RunOut.of(ctx.runs.control(actor, run_id, "kill")))


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> Response:
    """Remove a finished run and its files; 409 while it is active."""
    ctx.runs.delete(actor, run_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}/products", response_model=list[ProductOut])
def list_products(run_id: str, ctx: CtxDep, actor: ActorDep) -> list[ProductOut]:
    return [ProductOut.of(p) for p in ctx.runs.products(actor, run_id)]


@router.get("/runs/{run_id}/products.zip")
def download_all(run_id: str, ctx: CtxDep, actor: ActorDep) -> StreamingResponse:
    """Every product in one zip, streamed; members are named after the products' files
    (in a folder named after the product where several share a name)."""
    items = [(p, ctx.runs.product_path(p)) for p in ctx.runs.products(actor, run_id)]
    files = zip_members([(p, path) for p, path in items if path is not None])
    return StreamingResponse(
        zip_stream(files),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-products.zip"'},
    )


@router.get("/runs/{run_id}/products/{product_id}")
def download_product(run_id: str, product_id: str, ctx: CtxDep, actor: ActorDep) -> FileResponse:
    """The file, as an attachment; Range requests are answered as RFC 9110 says (206, 416
    when no byte is in the file, an invalid Range ignored)."""
    product, path = ctx.runs.product(actor, run_id, product_id)
    return download(path, media_type=product.media_type, filename=path.name)


class _Pipe:
    """A write-only file whose bytes are taken out as they come (zipfile can stream)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def zip_stream(files: list[tuple[str, Path]]) -> Iterator[bytes]:
    """A zip of ``files`` (member name, file), streamed as it is written."""
    pipe = _Pipe()
    with zipfile.ZipFile(cast(IO[bytes], pipe), "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in files:
            with path.open("rb") as src, zf.open(name, "w", force_zip64=True) as dest:
                while chunk := src.read(1 << 20):
                    dest.write(chunk)
                    yield pipe.take()
    yield pipe.take()
