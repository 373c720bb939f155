"""The dashboard's workflow page, API tokens, events and (admins) audit log pages
(server-rendered; changes and live updates through the HTTP API from ``static/daily.js``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowdeck.api import errors as api_errors
from flowdeck.api.deps import CtxDep
from flowdeck.api.schemas_runs import RunSummary
from flowdeck.domain.validation import validate_data
from flowdeck.errors import FlowdeckError
from flowdeck.web.dag import layout
from flowdeck.web.pages import _not_found, _principal, _render, _to_login, form_fields

router = APIRouter(include_in_schema=False)
AUDIT_PAGE = 100
EVENT_HISTORY = 5000  # the events page starts this many events back (of every user)
FAVICON = Path(__file__).parent / "static" / "favicon.svg"


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The icon, for browsers that ask for it where no page names it (a plain-text log)."""
    return FileResponse(FAVICON, media_type="image/svg+xml")


@router.get("/workflows/{ref:path}")
def workflow_page(request: Request, ref: str, ctx: CtxDep) -> Response:
    """One workflow version: its versions, source, inputs, graph, recent runs, a start."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    actor = principal.actor
    try:
        wf = ctx.workflows.get(actor, ref)
    except FlowdeckError as exc:  # unknown, not visible, or not a workflow reference
        return _not_found(request, principal, f"no workflow {ref}: {exc.message}")
    versions = [
        w
        for w in ctx.workflows.list_workflows(actor, name=wf.name, limit=200)
        if w.owner_id == wf.owner_id
    ]
    valid = validate_data(wf.spec).workflow
    graph = layout(valid.dependencies, valid.order) if valid else None
    runs = ctx.runs.list_runs(actor, workflow=f"{wf.name}@{wf.version}", limit=10)
    mine = [r for r in runs if r.workflow_ref == wf.ref]
    return _render(
        request,
        "workflow.html",
        principal,
        workflow=wf,
        versions=versions,
        fields=form_fields(wf.spec.get("inputs") or {}),
        graph=graph,
        runs=[RunSummary.of(r).model_dump(mode="json") for r in mine],
    )


@router.get("/tokens")
def tokens_page(request: Request, ctx: CtxDep) -> Response:
    """Your API tokens and sessions: create (the secret shown once), list, revoke."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    tokens = ctx.accounts.list_tokens(principal)
    return _render(
        request,
        "tokens.html",
        principal,
        tokens=tokens,
        current=principal.token.id,
        max_days=ctx.settings.api_token_max_days,
    )


@router.get("/events")
def events_page(
    request: Request,
    ctx: CtxDep,
    type: Annotated[str, Query(max_length=200)] = "",
    run: Annotated[str, Query(max_length=64)] = "",
    history: Annotated[str, Query(pattern="^(recent|all)$")] = "recent",
) -> Response:
    """Your runs' events, filtered by type pattern and run, live: from the last
    EVENT_HISTORY events the server recorded (of every user), or all (``history=all``)."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    with ctx.store.read() as tx:
        last = tx.last_event_id()
    after = 0 if history == "all" else max(0, last - EVENT_HISTORY)
    query = urlencode({"type": type, "run": run, "history": "all"})
    return _render(
        request,
        "events.html",
        principal,
        filters={"type": type, "run": run},
        after=after,
        all_url=f"/events?{query}" if after else "",
    )


@router.get("/admin/audit")
def audit_page(
    request: Request,
    ctx: CtxDep,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    action: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """The audit log, newest first, a page at a time (admins only; 404 for others)."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    if not principal.actor.is_admin:
        return _not_found(request, principal, "no such page")
    entries = ctx.accounts.audit(
        principal.actor, limit=AUDIT_PAGE, before_id=before, action=action or None
    )
    more = entries[-1].id if len(entries) == AUDIT_PAGE else None
    query = "&" + urlencode({"action": action}) if action else ""
    return _render(
        request,
        "audit.html",
        principal,
        entries=entries,
        action=action,
        next_url=f"/admin/audit?before={more}{query}" if more else "",
        first_url=f"/admin/audit?{query[1:]}" if before else "",
    )


def page_or_json_404(request: Request, exc: Exception) -> Response:
    """No route at this path: a browser asking for a page gets the dashboard's 404 page;
    anything else (the API, other methods, scripts) the API's JSON error."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    wants_page = (
        exc.status_code == 404
        and request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("accept", "")
        and not path.startswith(("/api/", "/static/", "/ga4gh/"))
    )
    if not wants_page:
        return api_errors.http_error(request, exc)
    ctx = request.app.state.ctx
    return _not_found(request, _principal(request, ctx), f"no page at {path}")
