"""/api/v1/runs/{id}/rerun: a new run reusing what did not change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from flowdeck.api.deps import ActorDep, CtxDep
from flowdeck.api.files_view import shown
from flowdeck.api.schemas_graphs import RerunIn
from flowdeck.api.schemas_runs import RunOut
from flowdeck.services.reruns import rerun

router = APIRouter(tags=["runs"])


@router.post("/runs/{run_id}/rerun", status_code=201, response_model=RunOut)
def rerun_run(
    run_id: str, ctx: CtxDep, actor: ActorDep, body: Annotated[RerunIn | None, Body()] = None
) -> RunOut:
    """A new run (queued) of an ended run's workflow version, parameters (with `params`
    changed) and files; steps whose cache key is unchanged are `cached` (their outputs
    reused), `from_step` and its dependents run again."""
    body = body or RerunIn()
    run = rerun(ctx.runs, actor, run_id, body.from_step, body.params)
    return shown(ctx, RunOut.of(run))
