"""Rerun: a new run of the same workflow version, parameters (some changed, if asked),
files and resources as an ended run, that reuses the outputs of the steps whose inputs did
not change (see :mod:`flowdeck.runtime.cache`); ``from_step`` runs that step and what
depends on it again whatever."""

from __future__ import annotations

import difflib
from typing import Any

from flowdeck import clock
from flowdeck.domain.composition import RERUN, RERUN_TAG, RunLink
from flowdeck.domain.privilege import Access, Actor
from flowdeck.domain.runs import Run, RunState
from flowdeck.errors import Conflict, InvalidInput
from flowdeck.ids import new_id
from flowdeck.services.run_files import is_file_input
from flowdeck.services.runs import Runs
from flowdeck.store.base import Tx


def rerun(
    runs: Runs,
    actor: Actor,
    run_id: str,
    from_step: str | None = None,
    params: dict[str, Any] | None = None,
) -> Run:
    with runs.store.read() as tx:
        src = runs.load(tx, actor, run_id, Access.WRITE)
        if src.active:
            raise Conflict(
                f"run {run_id} is {src.state.value}: rerun a run that ended", state=src.state.value
            )
        wf = tx.get_workflow(src.workflow_id) if src.workflow_id else None
        if wf is None:
            raise Conflict(f"the workflow of run {run_id} ({src.workflow_ref}) was deleted")
        staged = tx.list_staged_files(src.id)
    spec = runs.spec_of(wf)
    if from_step is not None and from_step not in spec.steps:
        near = difflib.get_close_matches(from_step, list(spec.steps), n=1)
        raise InvalidInput(
            f"workflow {wf.ref} has no step {from_step!r}"
            + (f"; did you mean {near[0]!r}?" if near else ""),
            field="from_step",
        )
    runs._check_params(spec, params or {})
    kept = {
        k: v
        for k, v in src.params.items()
        if k in spec.inputs and not is_file_input(spec.inputs[k])
    }
    values = {k: v for k, v in {**kept, **(params or {})}.items() if v is not None}
    files: dict[str, list[str]] = {}
    for f in staged:
        files.setdefault(f.input, []).append(f.path)
    now = clock.now()
    run = Run(
        new_id("run"),
        actor.user_id if src.owner_id == actor.user_id else src.owner_id,
        wf.id,
        wf.ref,
        RunState.STAGED,
        now,
        now,
        params=values,
        resources=dict(src.resources),
        # the rerun tag says where it comes from (and lets the step cache skip a query
        # for runs that are not reruns)
        tags=[t for t in src.tags if not t.startswith(RERUN_TAG)] + [f"{RERUN_TAG}{src.id}"],
        priority=src.priority,
        admin_priority=src.admin_priority,
    )

    def link(tx: Tx, new: Run) -> None:
        tx.add_run_link(RunLink(new.id, RERUN, src.id, from_step))
        tx.add_event(
            "run",
            new.id,
            "run.rerun",
            now,
            actor.username,
            {"of": src.id, "from_step": from_step, "changed": sorted(params or {})},
        )

    return runs.insert(actor, run, wf, spec, True, files, link)
