"""The web dashboard's pages: server-rendered (Jinja2) for the browser session cookie.
Live updates and every change go through the HTTP API from ``static/app.js``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from flowdeck import __version__
from flowdeck.api.deps import SESSION_COOKIE, CtxDep
from flowdeck.api.files_view import shown
from flowdeck.api.schemas_runs import ProductOut, RunOut, StagedFileOut
from flowdeck.domain.quotas import human_bytes
from flowdeck.domain.runs import TERMINAL_STATES, RunState
from flowdeck.domain.validation import validate_data
from flowdeck.engines.cwl_names import JOB_INPUT, REQUEST_INPUT
from flowdeck.errors import FlowdeckError, NotFound
from flowdeck.services.accounts import Principal
from flowdeck.services.context import Context
from flowdeck.services.run_resources import executors_for
from flowdeck.web.cwl_job import job_lines
from flowdeck.web.dag import layout

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["human_bytes"] = human_bytes
router = APIRouter(include_in_schema=False)

# The pages load their script and style from /static only: no inline script, style or event
# handler (the JSON data blocks of run.html and graph.html are not run), no other origin;
# fetch, EventSource and WebSocket go to this server only.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
STATES = [s.value for s in RunState]
TERMINAL = sorted(s.value for s in TERMINAL_STATES)


def form_fields(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """What the new-run form needs of each input (from the canonical spec)."""
    fields = []
    for name, inp in inputs.items():
        if name == REQUEST_INPUT and JOB_INPUT in inputs:
            continue  # a CWL workflow's copy of its job document, the server's to keep
        items = inp.get("items")
        item_type = (items.get("type") if isinstance(items, dict) else items) or ""
        has_default = "default" in inp
        default = inp.get("default")
        if isinstance(default, list):
            default = ", ".join(str(v) for v in default)
        fields.append(
            {
                "name": name,
                "type": inp.get("type", "string"),
                "item_type": item_type,
                "required": inp.get("required", not has_default),
                "default": default,
                "has_default": has_default,
                "description": inp.get("description") or "",
                "minimum": inp.get("minimum"),
                "maximum": inp.get("maximum"),
                "max_length": inp.get("max_length"),
                "symbols": inp.get("symbols") or [],
                "bounds": bounds(inp.get("minimum"), inp.get("maximum"), inp.get("max_length")),
            }
        )
    return fields


def bounds(low: float | None, high: float | None, max_length: int | None) -> str:
    """What a value may be, said before it is sent: "From 1 to 10.", "At most 20 characters."."""
    if low is not None and high is not None:
        return f"From {low:g} to {high:g}."
    if low is not None:
        return f"At least {low:g}."
    if high is not None:
        return f"At most {high:g}."
    return f"At most {max_length} characters." if max_length is not None else ""


def _principal(request: Request, ctx: Context) -> Principal | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        return ctx.accounts.authenticate(secret)
    except FlowdeckError:
        return None


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _render(
    request: Request,
    name: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    user = principal.user if principal else None
    base = {
        "user": user,
        "is_admin": bool(principal and principal.actor.is_admin),
        "version": __version__,
        "states": STATES,
        "terminal": TERMINAL,
    }
    response = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    response.headers["Content-Security-Policy"] = CSP
    return response


def _not_found(request: Request, principal: Principal | None, message: str) -> HTMLResponse:
    return _render(request, "not_found.html", principal, status_code=404, message=message)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, ctx: CtxDep, next: str = "/") -> Response:
    """Sign in."""
    safe_next = next if next.startswith("/") and not next.startswith("//") else "/"
    return _render(request, "login.html", _principal(request, ctx), next=safe_next)


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request, ctx: CtxDep) -> Response:
    """Create an account."""
    mode = ctx.settings.registration
    return _render(request, "register.html", _principal(request, ctx), registration=mode)


@router.get("/runs/new", response_class=HTMLResponse)
def new_run_page(
    request: Request, ctx: CtxDep, workflow: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    """A form generated from the workflow's typed inputs."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    choices = ctx.workflows.list_workflows(
        principal.actor, name=None, owner=None, before_id=None, limit=200
    )
    chosen = choices[0] if choices and not workflow else None  # the newest by default
    if workflow:
        try:
            chosen = ctx.workflows.get(principal.actor, workflow)
        except FlowdeckError as exc:  # unknown, not visible, or not a workflow reference
            return _not_found(request, principal, f"no workflow {workflow}: {exc.message}")
    inputs = (chosen.spec.get("inputs") or {}) if chosen else {}
    return _render(
        request,
        "new_run.html",
        principal,
        workflows=choices,
        workflow=chosen,
        fields=form_fields(inputs),
        executors=executors_for(ctx.settings, principal.actor.username, principal.actor.is_admin),
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, ctx: CtxDep) -> Response:
    """One run: its graph, steps, inputs, products, controls and events, live."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    actor = principal.actor
    try:
        run, counts, current, ports = ctx.runs.status(actor, run_id)
        view = ctx.runs.get(actor, run_id)
        files = ctx.runs.staged_files(actor, run_id)
        products = ctx.runs.products(actor, run_id)
    except NotFound:
        return _not_found(request, principal, f"no run {run_id}")
    with ctx.store.read() as tx:
        wf = tx.get_workflow(run.workflow_id) if run.workflow_id else None
    valid = validate_data(wf.spec).workflow if wf else None
    graph = layout(valid.dependencies, valid.order) if valid else None
    steps: dict[str, str] = {}
    for s in view.steps:
        steps.setdefault(s.name, s.state.value)
    out = shown(ctx, RunOut.of(run, counts, current, ports)).model_dump(mode="json")
    staged = [StagedFileOut.of(f).model_dump(mode="json") for f in files]
    return _render(
        request,
        "run.html",
        principal,
        run=out,
        cwl_job=job_lines(out["cwl_job"], staged) if out["cwl_job"] is not None else None,
        graph=graph,
        step_states=steps,
        files=staged,
        products=[ProductOut.of(p).model_dump(mode="json") for p in products],
        owned=run.owner_id == actor.user_id or actor.is_admin,
        workflow_ref=wf.ref if wf else None,
    )


@router.get("/workflows", response_class=HTMLResponse)
def workflows_page(request: Request, ctx: CtxDep) -> Response:
    """Workflows you can see, and a form to upload one."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    items = ctx.workflows.list_workflows(
        principal.actor, name=None, owner=None, before_id=None, limit=200
    )
    return _render(request, "workflows.html", principal, workflows=items)


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, ctx: CtxDep) -> Response:
    """User administration, quotas and usage (admins only; 404 for others)."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    if not principal.actor.is_admin:
        return _not_found(request, principal, "no such page")
    found = ctx.quotas.list(principal.actor)  # every account, with its quotas and usage
    users = [q.user for q in found]
    quotas = {q.user.id: q for q in found}
    return _render(
        request, "admin.html", principal, users=users, quotas=quotas, defaults=ctx.quotas.defaults
    )
