"""/api/v1/workflows: push, validate, list, get, share, trust, delete; and the JSON Schema
of the workflow format at /api/v1/schema/workflow.json."""

from __future__ import annotations

import contextlib
import shutil
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from flowdeck.api.deps import ActorDep, AdminDep, CtxDep
from flowdeck.api.params import check_cursor, cursor_query
from flowdeck.api.schemas import (
    TrustChange,
    ValidationOut,
    VisibilityChange,
    WorkflowOut,
    WorkflowPage,
    WorkflowSummary,
)
from flowdeck.domain.spec import json_schema
from flowdeck.domain.workflows import REF_PATTERN, Visibility
from flowdeck.engines.cwl import load_yaml, looks_like_cwl
from flowdeck.errors import ArchiveRejected, InvalidInput, PayloadTooLarge
from flowdeck.services.context import Context

router = APIRouter(tags=["workflows"])


class _RefConvertor(Convertor[str]):
    """A workflow reference in a path: ``name@version`` or ``owner/name@version``.  Loose
    (the service checks it and names what is wrong), but not the other paths under
    /workflows: ``GET …@1/visibility`` or ``GET /workflows/validate`` is a method that path
    does not take (405), not a workflow named ``…@1/visibility`` or ``validate``."""

    regex = r"(?!validate$)[^/]+(?:/(?!(?:visibility|trusted)$)[^/]+)?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("workflow_ref", _RefConvertor())
Ref = Annotated[
    str,
    PathParam(
        description="name@version (yours), owner/name@version, or …@latest",
        json_schema_extra={"pattern": REF_PATTERN},
    ),
]

SPEC_TYPES = {
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "text/plain",
}
ARCHIVE_TYPES = {
    "application/zip",
    "application/x-zip-compressed",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/octet-stream",
}
BODY_DOC = (
    "Send the spec as the body (`Content-Type: application/yaml` or `application/json`), or "
    "an archive holding `flowdeck.yaml` and its code (`application/zip` or "
    "`application/gzip` for .tar.gz)."
)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _save_body(request: Request, ctx: Context) -> Path:
    """Stream the request body to a temporary file (never all in memory)."""
    limit = ctx.settings.max_archive_bytes
    folder = ctx.workflows.new_temp_dir("upload-")
    path = folder / "archive"
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"archive larger than {limit} bytes", limit_bytes=limit)
            out.write(chunk)
    return path


async def _receive(request: Request, ctx: Context) -> tuple[bytes | None, Path | None]:
    media = _media_type(request)
    if media in SPEC_TYPES:
        body = await request.body()
        if len(body) > ctx.settings.max_request_bytes:
            raise PayloadTooLarge(
                f"spec larger than {ctx.settings.max_request_bytes} bytes; "
                "large workflows go in an archive"
            )
        return body, None
    if media in ARCHIVE_TYPES:
        return None, await _save_body(request, ctx)
    raise InvalidInput(
        f"unsupported Content-Type {media or '(none)'!r}. {BODY_DOC}", field="content-type"
    )


def _cleanup(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


@router.get("/schema/workflow.json", tags=["schema"])
async def workflow_schema() -> dict[str, Any]:
    """The JSON Schema of flowdeck's workflow format (public)."""
    return json_schema()


BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {"type": "object", "description": "See /api/v1/schema/workflow.json"}
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/workflows",
    status_code=201,
    response_model=WorkflowOut,
    responses={200: {"model": WorkflowOut, "description": "Identical content: unchanged"}},
    openapi_extra=BODY_OPENAPI,
    description="Store a workflow version. " + BODY_DOC + " Versions are immutable: the "
    "same content again answers 200 with the stored version; other content under an "
    "existing version is 409. An invalid spec is 422 with every problem in "
    "`details.errors`, each with its path, line and column.",
)
async def push_workflow(
    request: Request,
    ctx: CtxDep,
    actor: ActorDep,
    response: Response,
    visibility: Annotated[Visibility, Query()] = Visibility.PRIVATE,
    workflow_type: Annotated[
        Literal["auto", "flowdeck", "CWL"],
        Query(
            description="auto: CWL when the document has cwlVersion, or when an archive "
            "holds .cwl files and no flowdeck spec."
        ),
    ] = "auto",
    main: Annotated[
        str | None, Query(max_length=255, description="CWL archives: the file to run.")
    ] = None,
    name: Annotated[str | None, Query(max_length=64, description="CWL: workflow name.")] = None,
    version: Annotated[
        str | None, Query(max_length=64, description="CWL: version (default: content hash).")
    ] = None,
) -> WorkflowOut:
    body, archive = await _receive(request, ctx)
    cwl: dict[str, Any] = {"name": name, "version": version}
    try:
        if archive is not None:
            if workflow_type == "CWL":
                pushed = await run_in_threadpool(
                    partial(ctx.cwl.push_archive, actor, archive, visibility, main=main, **cwl)
                )
            else:
                try:
                    pushed = await run_in_threadpool(
                        ctx.workflows.push_archive, actor, archive, visibility
                    )
                except ArchiveRejected as exc:
                    if workflow_type != "auto" or exc.details.get("reason") != "no_spec":
                        raise
                    pushed = await run_in_threadpool(
                        partial(ctx.cwl.push_archive, actor, archive, visibility, main=main, **cwl)
                    )
        else:
            assert body is not None
            text = body.decode("utf-8", errors="replace")
            if workflow_type == "CWL" or (
                workflow_type == "auto"
                and "cwlVersion" in text
                and looks_like_cwl(load_yaml(text, "the document"))
            ):
                pushed = await run_in_threadpool(
                    partial(ctx.cwl.push_text, actor, text, visibility, **cwl)
                )
            else:
                pushed = await run_in_threadpool(ctx.workflows.push_spec, actor, body, visibility)
    finally:
        _cleanup(archive)
    if not pushed.created:
        response.status_code = 200
    return WorkflowOut.of(pushed.workflow)


# Validation reports on any document: a JSON body that is not an object is a workflow with
# a problem (200, valid: false), not a refused request.
VALIDATE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            **BODY_OPENAPI["requestBody"]["content"],
            "application/json": {
                "schema": {"description": "A workflow spec (see /api/v1/schema/workflow.json)"}
            },
        },
    }
}


@router.post("/workflows/validate", response_model=ValidationOut, openapi_extra=VALIDATE_OPENAPI)
async def validate_workflow(request: Request, ctx: CtxDep, _actor: ActorDep) -> ValidationOut:
    """Check a spec or an archive without storing it: every problem at once, each with
    its path and line:column."""
    body, archive = await _receive(request, ctx)
    try:
        if archive is not None:
            unpacked = await run_in_threadpool(ctx.workflows.unpack, archive)
            try:
                report = ctx.workflows.validate_spec(unpacked.spec_text, unpacked.members)
            finally:
                shutil.rmtree(unpacked.root, ignore_errors=True)
        else:
            assert body is not None
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"the workflow spec is not UTF-8 text: {exc}") from exc
            report = ctx.workflows.validate_spec(text, None)
    finally:
        _cleanup(archive)
    return ValidationOut.of(report)


@router.get("/workflows", response_model=WorkflowPage)
def list_workflows(
    ctx: CtxDep,
    actor: ActorDep,
    name: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        str | None, cursor_query("wf", "Cursor: next_before of the previous page.")
    ] = None,
) -> WorkflowPage:
    """Workflows you can see (yours, shared with you, public; admins: all), newest first."""
    check_cursor(before, "wf", "before")
    items = ctx.workflows.list_workflows(
        actor, name=name, owner=owner, before_id=before, limit=limit
    )
    nxt = items[-1].id if len(items) == limit else None
    return WorkflowPage(items=[WorkflowSummary.of(w) for w in items], next_before=nxt)


@router.put("/workflows/{ref:workflow_ref}/visibility", response_model=WorkflowOut)
def set_visibility(ref: Ref, body: VisibilityChange, ctx: CtxDep, actor: ActorDep) -> WorkflowOut:
    """private, shared (read-only, with `users`), or public; owner or admin."""
    wf = ctx.workflows.set_visibility(actor, ref, body.visibility, body.users)
    return WorkflowOut.of(wf, ctx.workflows.shared_with(actor, ref))


@router.put("/workflows/{ref:workflow_ref}/trusted", response_model=WorkflowOut)
def set_trusted(ref: Ref, body: TrustChange, ctx: CtxDep, actor: AdminDep) -> WorkflowOut:
    """Admins mark a workflow trusted: the in-server executor runs only trusted workflows."""
    return WorkflowOut.of(ctx.workflows.set_trusted(actor, ref, body.trusted))


@router.get("/workflows/{ref:workflow_ref}", response_model=WorkflowOut)
def get_workflow(ref: Ref, ctx: CtxDep, actor: ActorDep) -> WorkflowOut:
    """`name@version` (yours), `owner/name@version`, or `…@latest`."""
    wf = ctx.workflows.get(actor, ref)
    shared = (
        ctx.workflows.shared_with(actor, ref)
        if wf.owner_id == actor.user_id or (actor.is_admin)
        else None
    )
    return WorkflowOut.of(wf, shared)


@router.delete("/workflows/{ref:workflow_ref}", status_code=204)
def delete_workflow(ref: Ref, ctx: CtxDep, actor: ActorDep) -> Response:
    """Delete a version and its files; 409 while an active run uses it."""
    ctx.workflows.delete(actor, ref)
    return Response(status_code=204)
