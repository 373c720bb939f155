"""Sub-workflows seen from the services: creating the child run of a ``uses:`` step (for
:class:`flowdeck.runtime.subflows.SubflowExecutor`), and the nested view of a parent's
children in its status and steps."""

from __future__ import annotations

from typing import Any

from flowdeck import clock
from flowdeck.domain.composition import CHILD, RunLink
from flowdeck.domain.ports import StreamPort
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Run, StepRecord
from flowdeck.errors import NotFound
from flowdeck.runtime.subflows import CreateChild
from flowdeck.services.run_files import is_file_input
from flowdeck.services.runs import Runs
from flowdeck.store.base import Tx

MAX_DEPTH = 8


def child_creator(runs: Runs) -> CreateChild:
    def create(parent_id: str, step: str, index: int, uses: str, values: dict[str, Any]) -> Run:
        with runs.store.read() as tx:
            parent = tx.get_run(parent_id)
            user = tx.get_user(parent.owner_id) if parent else None
            depth = _depth(tx, parent_id)
        if parent is None or user is None:
            raise NotFound(f"run {parent_id} is gone")
        if depth >= MAX_DEPTH:
            raise NotFound(f"sub-workflows nest at most {MAX_DEPTH} deep")
        owner = Actor(user.id, user.username, user.role)
        spec = runs.spec_of(runs.workflows.get(owner, uses))  # one the owner may use
        params: dict[str, Any] = {}
        files: dict[str, list[str]] = {}
        for name, value in values.items():
            inp = spec.inputs.get(name)
            if inp is not None and is_file_input(inp) and value is not None:
                files[name] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
            else:
                params[name] = value

        def link(tx: Tx, child: Run) -> None:
            tx.add_run_link(RunLink(child.id, CHILD, parent_id, step, index))
            tx.add_event(
                "run",
                parent_id,
                "subflow.started",
                clock.now(),
                None,
                {"step": step, "index": index, "run_id": child.id, "workflow": child.workflow_ref},
            )

        resources = {"env": dict(parent.resources.get("env") or {})}
        return runs.create(
            owner, uses, params, resources, [f"parent:{parent_id}"], True, files=files, link=link
        )

    return create


def _depth(tx: Tx, run_id: str) -> int:
    depth = 0
    link = tx.get_run_link(run_id)
    while link is not None and link.kind == CHILD and depth < MAX_DEPTH + 1:
        depth += 1
        link = tx.get_run_link(link.parent_id)
    return depth


def status_with_children(
    runs: Runs, actor: Actor, run_id: str
) -> tuple[Run, dict[str, int], list[str], list[StreamPort], list[dict[str, Any]]]:
    """:meth:`Runs.status` and the run's :func:`children`, read in one transaction."""
    with runs.store.read() as tx:
        return (*runs.status_in(tx, actor, run_id), children(tx, run_id))


def children(tx: Tx, run_id: str) -> list[dict[str, Any]]:
    """The child runs of a run's ``uses:`` steps, with their step counts."""
    out = []
    for link in tx.list_run_links(run_id, CHILD):
        child = tx.get_run(link.run_id)
        if child is None:
            continue
        counts, current = tx.step_summary(child.id)
        out.append(
            {
                "step": link.step,
                "index": link.index if link.index >= 0 else None,
                "run_id": child.id,
                "workflow": child.workflow_ref,
                "state": child.state.value,
                "steps": counts,
                "current_steps": current,
                "children": children(tx, child.id),
            }
        )
    return out


def nested_steps(tx: Tx, run_id: str, prefix: str = "") -> list[tuple[str, StepRecord]]:
    """A run's step records and, after each ``uses:`` step, its child run's (labels
    ``step/inner``), as (label prefix, record)."""
    links = {(link.step, link.index): link for link in tx.list_run_links(run_id, CHILD)}
    out: list[tuple[str, StepRecord]] = []
    for rec in tx.list_steps(run_id):
        out.append((prefix, rec))
        link = links.get((rec.name, rec.index))
        if link is not None and prefix.count("/") < MAX_DEPTH:
            out.extend(nested_steps(tx, link.run_id, f"{prefix}{rec.label}/"))
    return out


def family(tx: Tx, run_id: str) -> list[str]:
    """The run and its descendant child runs."""
    ids = [run_id]
    for link in tx.list_run_links(run_id, CHILD):
        if len(ids) < 1000:
            ids.extend(family(tx, link.run_id))
    return ids
