"""GA4GH WES 1.1 at /ga4gh/wes/v1 (see docs/wes.md): the same bearer tokens and privilege
rule as /api/v1; errors here are WES ErrorResponse bodies ``{msg, status_code}``.

The step logs and products that a RunLog points to are served here too (the same answers
as under /api/v1), so that a WES client reads them with the credentials it sends to WES."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BeforeValidator
from starlette.datastructures import FormData, UploadFile

from flowdeck.api.deps import ActorDep, CtxDep, hot_read
from flowdeck.api.routes import runs as runs_routes
from flowdeck.api.schemas_wes import (
    WES_ERRORS,
    RunId,
    RunListResponse,
    RunLog,
    RunStatus,
    TaskListResponse,
    TaskLog,
)
from flowdeck.errors import InvalidInput, PayloadTooLarge
from flowdeck.services.context import Context
from flowdeck.services.wes import WES_PATH, Attachment, Wes, safe_relative, submission

WES_PREFIX = f"/{WES_PATH}"
router = APIRouter(prefix=WES_PREFIX, tags=["wes"], responses=WES_ERRORS)
CHUNK = 1 << 20
FIELDS = (
    "workflow_params",
    "workflow_type",
    "workflow_type_version",
    "tags",
    "workflow_engine",
    "workflow_engine_version",
    "workflow_engine_parameters",
    "workflow_url",
)


def _lenient_int(value: Any) -> int | None:
    """A query number that never fails validation (WES ListTasks declares no 400):
    anything but an integer is as if not given."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _base(request: Request) -> str:
    return str(request.base_url)


def _wes(ctx: Context) -> Wes:
    return Wes(ctx)


@router.get("/service-info")
def service_info(request: Request, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """GetServiceInfo: workflow types and versions, engine parameters, the caller's run
    counts by WES state."""
    return _wes(ctx).service_info(actor, _base(request))


@router.get("/runs", response_model=RunListResponse, response_model_exclude_none=True)
def list_runs(
    ctx: CtxDep,
    actor: ActorDep,
    page_size: Annotated[int | None, Query(ge=1, le=10**6)] = None,
    page_token: Annotated[str | None, Query(max_length=400)] = None,
) -> dict[str, Any]:
    """ListRuns, newest first; the pages of one listing are a snapshot taken at its first
    page (runs created later are not listed; next_page_token carries it)."""
    return _wes(ctx).list_runs(actor, page_size, page_token)


async def _attachment(
    upload: UploadFile, key: str, attachments: dict[str, Attachment], total: int, limit: int
) -> int:
    """Check and hash one attachment (kept as received: it is written only if its files
    are not stored already); the bytes so far."""
    if key != "workflow_attachment":
        raise InvalidInput(f"unexpected file field {key!r}", field=key)
    name = safe_relative(upload.filename or "")
    if name in attachments:
        raise InvalidInput(f"workflow_attachment {name!r} appears twice")
    digest, size = hashlib.sha256(), 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if total + size > limit:
            raise PayloadTooLarge(f"attachments larger than {limit} bytes")
        digest.update(chunk)
    attachments[name] = Attachment(digest.hexdigest(), size, upload.file)
    return total + size


async def _read_form(form: FormData, ctx: Context) -> tuple[dict[str, str], dict[str, Attachment]]:
    fields: dict[str, str] = {}
    attachments: dict[str, Attachment] = {}
    limit = ctx.settings.max_archive_bytes
    total = 0
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            total = await _attachment(value, key, attachments, total, limit)
        elif key in FIELDS:
            fields[key] = value
        else:
            raise InvalidInput(f"unknown field {key!r}", field=key)
    return fields, attachments


REQUIRED = ("workflow_url", "workflow_type", "workflow_type_version")  # services.wes.submission
RUN_REQUEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        **{name: {"type": "string"} for name in FIELDS},
                        **{name: {"type": "string", "minLength": 1} for name in REQUIRED},
                        "workflow_attachment": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                    },
                    "required": list(REQUIRED),
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post("/runs", response_model=RunId, openapi_extra=RUN_REQUEST_OPENAPI)
async def run_workflow(request: Request, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """RunWorkflow (multipart/form-data): a CWL workflow from workflow_attachment files
    (workflow_url names one), or a stored workflow (workflow_url: name@version)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidInput("RunWorkflow takes multipart/form-data", field="content-type")
    form = await request.form(max_files=1000, max_fields=100)
    try:
        fields, attachments = await _read_form(form, ctx)
        run_id = await _wes(ctx).submit_async(actor, submission(fields, attachments))
    finally:
        await form.close()
    return {"run_id": run_id}


@router.get("/runs/{run_id}", response_model=RunLog, response_model_exclude_none=True)
def get_run_log(request: Request, run_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """GetRunLog: the request, state, run log, task_logs_url and outputs (files as product
    download URLs)."""
    return _wes(ctx).run_log(actor, run_id, _base(request))


@router.get("/runs/{run_id}/status", response_model=RunStatus)
async def get_run_status(run_id: str, ctx: CtxDep, actor: ActorDep) -> Response:
    """GetRunStatus."""
    found = await hot_read(ctx, _wes(ctx).status, actor, run_id)
    return Response(RunStatus(**found).model_dump_json(), media_type="application/json")


@router.get(
    "/runs/{run_id}/tasks", response_model=TaskListResponse, response_model_exclude_none=True
)
def list_tasks(
    request: Request,
    run_id: str,
    ctx: CtxDep,
    actor: ActorDep,
    page_size: Annotated[int | None, BeforeValidator(_lenient_int), Query()] = None,
    page_token: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """ListTasks: CWL steps as cwltool reported them (flowdeck workflows: their steps).
    Never 400: a page_size that is not a positive integer is the default (100), a
    page_token this server did not give is past the end (an empty page)."""
    return _wes(ctx).tasks(actor, run_id, page_size, page_token, _base(request))


@router.get(
    "/runs/{run_id}/tasks/{task_id}", response_model=TaskLog, response_model_exclude_none=True
)
def get_task(
    request: Request, run_id: str, task_id: str, ctx: CtxDep, actor: ActorDep
) -> dict[str, Any]:
    """GetTask."""
    return _wes(ctx).task(actor, run_id, task_id, _base(request))


@router.post("/runs/{run_id}/cancel", response_model=RunId)
def cancel_run(run_id: str, ctx: CtxDep, actor: ActorDep) -> dict[str, Any]:
    """CancelRun: stops the run (its process group gets SIGTERM, then SIGKILL after the
    server's stop grace)."""
    return _wes(ctx).cancel(actor, run_id)


# -- the files a RunLog points to (not WES operations: flowdeck's, under the WES prefix) --


LOG_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A piece of the log",
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "headers": {"X-Next-Offset": {"schema": {"type": "integer"}}},
    }
}
FILE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("/runs/{run_id}/steps/{step}/logs", response_class=Response, responses=LOG_OK)
def step_logs(
    run_id: str,
    step: str,
    ctx: CtxDep,
    actor: ActorDep,
    stream: runs_routes.LogStream = "stdout",
    index: runs_routes.LogIndex = -1,
    attempt: runs_routes.LogAttempt = None,
    offset: runs_routes.LogOffset = 0,
) -> Response:
    """A step's log, as `GET /api/v1/runs/{run_id}/steps/{step}/logs` (the run log's and
    the task logs' stdout/stderr URLs): up to 1 MiB from `offset`, `X-Next-Offset` says
    where to go on."""
    return runs_routes.step_logs(run_id, step, ctx, actor, stream, index, attempt, offset)


@router.get("/runs/{run_id}/products/{product_id}", response_class=FileResponse, responses=FILE_OK)
def download_product(run_id: str, product_id: str, ctx: CtxDep, actor: ActorDep) -> FileResponse:
    """A product's file, as `GET /api/v1/runs/{run_id}/products/{product_id}` (the
    `location` of an output file in the RunLog); Range requests are honoured."""
    return runs_routes.download_product(run_id, product_id, ctx, actor)


@router.get(
    "/runs/{run_id}/products/{product_id}/{filename}",
    response_class=FileResponse,
    responses=FILE_OK,
)
def download_named_product(
    run_id: str, product_id: str, filename: str, ctx: CtxDep, actor: ActorDep
) -> FileResponse:
    """The same file, by a URL ending in its name (the `location` of an output File of a
    CWL run); the name is not checked."""
    return runs_routes.download_product(run_id, product_id, ctx, actor)


ZIP_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The Directory's files in one zip",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get(
    "/runs/{run_id}/directories/{where:path}",
    response_class=StreamingResponse,
    responses=ZIP_OK,
)
def download_directory(run_id: str, where: str, ctx: CtxDep, actor: ActorDep) -> StreamingResponse:
    """An output Directory of a CWL run (its `location`) as a zip of its files, each under
    its path inside the Directory."""
    name, members = _wes(ctx).directory(actor, run_id, where)
    return StreamingResponse(
        runs_routes.zip_stream(members),
        media_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}.zip"},
    )
