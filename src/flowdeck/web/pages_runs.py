"""The runs list (filters, state counts, sort, cursor paging: all in the query string, so
a view can be shared) and a step's page (its details and its log viewer)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from flowdeck.api.deps import CtxDep
from flowdeck.api.schemas_runs import RunSummary
from flowdeck.domain.runs import STEP_DONE, TERMINAL_STATES, RunState, StepState
from flowdeck.errors import NotFound
from flowdeck.web.pages import STATES, _not_found, _principal, _render, _to_login

router = APIRouter(include_in_schema=False)
SORTS = ("created", "workflow", "state")
PAGE = 50


def _day(text: str, name: str, problems: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"{name}: {text!r} is not a date (YYYY-MM-DD)")
        return None


def _start(day: date | None) -> datetime | None:
    return datetime.combine(day, time(), UTC) if day else None


def _progress(counts: dict[str, int]) -> dict[str, int]:
    done = sum(n for state, n in counts.items() if StepState(state) in STEP_DONE)
    return {"done": done, "total": sum(counts.values())}


@router.get("/")
def runs_page(
    request: Request,
    ctx: CtxDep,
    state: Annotated[list[str] | None, Query()] = None,
    workflow: Annotated[str, Query(max_length=200)] = "",
    tag: Annotated[str, Query(max_length=100)] = "",
    search: Annotated[str, Query(max_length=200)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    sort: Annotated[str, Query(max_length=10)] = "-created",
    cursor: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
) -> Response:
    """The runs list, updated live."""
    context = ctx
    principal = _principal(request, context)
    if principal is None:
        return _to_login(request)
    problems: list[str] = []
    wanted = [s.strip() for one in state or [] for s in one.split(",") if s.strip()]
    for s in wanted:
        if s not in STATES:
            problems.append(f"state: {s!r} is not a run state")
    states = [RunState(s) for s in STATES if s in wanted]
    key = sort.lstrip("-")
    if key not in SORTS:
        problems.append(f"sort: {sort!r} is not one of {', '.join(SORTS)} (- first: descending)")
        sort, key = "-created", "created"
    first, last = _day(since, "since", problems), _day(until, "until", problems)
    if cursor and not cursor.startswith("run_"):
        problems.append(f"cursor: {cursor!r} is not a run id")
        cursor = ""
    actor = principal.actor
    runs = context.runs.list_runs(
        actor,
        states=states or None,
        workflow=workflow or None,
        tag=tag or None,
        search=search or None,
        created_after=_start(first),
        created_before=_start(last + timedelta(days=1)) if last else None,
        after_id=cursor or None,
        newest_first=sort.startswith("-"),
        order_by=key,
        limit=limit,
    )
    viewer = None if actor.is_admin else actor.user_id
    rows = []
    with context.store.read() as tx:
        counts = {s.value: n for s, n in tx.count_runs_by_state(viewer).items() if n}
        steps = tx.step_counts([r.id for r in runs])
        for r in runs:
            row = RunSummary.of(r).model_dump(mode="json")
            row["progress"] = _progress(steps.get(r.id, {}))
            error = r.error or {}
            where = f"{error['step']}: " if error.get("step") else ""
            row["error"] = where + str(error.get("message") or "") if error else ""
            rows.append(row)
    filters = {
        "state": [s.value for s in states],
        "workflow": workflow,
        "tag": tag,
        "search": search,
        "since": since if first else "",
        "until": until if last else "",
        "sort": sort,
        "limit": limit,
    }

    def url(**change: Any) -> str:
        q = {**filters, **change}
        pairs = [("state", s) for s in q.pop("state")]
        if q.get("sort") == "-created":
            q.pop("sort")
        if q.get("limit") == PAGE:
            q.pop("limit")
        pairs += [(k, v) for k, v in q.items() if v]
        return "/?" + urlencode(pairs) if pairs else "/"

    count_links = [
        {"state": s, "count": counts[s], "url": url(state=[s]), "on": [s] == filters["state"]}
        for s in STATES
        if counts.get(s)
    ]
    sorts = {
        k: {
            "url": url(sort=(k if sort == "-" + k else "-" + k)),
            "aria": ("descending" if sort == "-" + k else "ascending") if key == k else "none",
        }
        for k in SORTS
    }
    return _render(
        request,
        "runs.html",
        principal,
        runs=rows,
        filters=filters,
        problems=problems,
        counts=count_links,
        total=sum(counts.values()),
        all_url=url(state=[]),
        sorts=sorts,
        next_url=url(cursor=runs[-1].id) if len(runs) == limit else "",
        first_url=url() if cursor else "",
        terminal_states=sorted(s.value for s in TERMINAL_STATES),
    )


@router.get("/runs/{run_id}/steps/{step}")
def step_page(
    request: Request,
    run_id: str,
    step: str,
    ctx: CtxDep,
    index: Annotated[int, Query(ge=-1, le=10**9)] = -1,
    attempt: Annotated[int | None, Query(ge=1, le=10**6)] = None,
    stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
) -> Response:
    """One step of a run: its state, attempts, exit and error, and its logs."""
    principal = _principal(request, ctx)
    if principal is None:
        return _to_login(request)
    try:
        view = ctx.runs.get(principal.actor, run_id)
    except NotFound:
        return _not_found(request, principal, f"no run {run_id}")
    rec = next((s for s in view.steps if s.name == step and s.index == index), None)
    if rec is None:
        return _not_found(request, principal, f"run {run_id} has no step {step}")
    siblings = [s for s in view.steps if s.name == step]
    shown = attempt if attempt and attempt <= max(rec.attempts, 1) else max(rec.attempts, 1)
    ended = rec.state not in (StepState.RUNNING, StepState.PENDING, StepState.PAUSED)
    duration = (
        (rec.ended_at - rec.started_at).total_seconds() if rec.started_at and rec.ended_at else None
    )
    return _render(
        request,
        "step.html",
        principal,
        run=view.run,
        step=rec,
        instances=siblings,
        attempt=shown,
        stream=stream,
        ended=ended,
        duration=duration,
        run_ended=view.run.state in TERMINAL_STATES,
    )
