"""Runs: create, stage (params, files, resources), validate, start, watch, control, and
their products.  Active runs belong to the scheduler: control actions on them go through
it; staged runs are handled here."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyio import to_thread

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.accounts import Role
from flowdeck.domain.ports import StreamPort, stream_ports
from flowdeck.domain.privilege import Access, Actor, allowed
from flowdeck.domain.runs import (
    Product,
    Run,
    RunState,
    StagedFile,
    StepRecord,
    StepState,
    transition,
)
from flowdeck.domain.spec import WorkflowSpec
from flowdeck.domain.text import check_name
from flowdeck.domain.values import check_value
from flowdeck.domain.workflows import Workflow
from flowdeck.engines.cwl import is_cwl
from flowdeck.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from flowdeck.ids import new_id
from flowdeck.runtime.rundir import RunDir, forget_removed_files
from flowdeck.runtime.scheduler import SchedulerHandle
from flowdeck.services.cwl_jobs import has_job, job_params, start_problems
from flowdeck.services.quotas import Quotas
from flowdeck.services.run_files import RunFiles, is_file_input
from flowdeck.services.run_resources import (
    check_dask_user,
    check_resources,
    dask_secret_problems,
)
from flowdeck.services.workflows import Workflows
from flowdeck.store.base import EventRow, Store, Tx
from flowdeck.store.group import GroupCommit

if TYPE_CHECKING:
    from flowdeck.domain.webhooks import Subscription
    from flowdeck.services.webhooks import Webhooks

RUN_KIND = "run"
MAX_PRIORITY = 100
OPERATOR = Actor("", "flowdeck admin", Role.ADMIN)  # the command line on the server


@dataclasses.dataclass(frozen=True, slots=True)
class RunView:
    """A run with what its status page needs."""

    run: Run
    steps: list[StepRecord]


Created = tuple[Run, list[EventRow]]  # a new run and its first events


def _insert_created(tx: Tx, items: list[Created]) -> list[None]:
    """Write new runs and their first events: one multi-row insert per table."""
    tx.add_runs([run for run, _ in items])
    tx.add_events([e for _, events in items for e in events])
    return [None] * len(items)


class Runs(RunFiles):
    def __init__(self, store: Store, settings: Settings, workflows: Workflows) -> None:
        self.store = store
        self.settings = settings
        self.workflows = workflows
        self.quotas = Quotas(store, settings, self.spec_of)
        self.scheduler: SchedulerHandle | None = None
        self.webhooks: Webhooks | None = None  # run-scoped callbacks made with a run
        self._specs: dict[str, WorkflowSpec] = {}
        # concurrent creations share a transaction and its statements
        self._group: GroupCommit[Created] = GroupCommit(store, apply=_insert_created)

    # -- helpers --------------------------------------------------------------------------
    def upload_dir(self) -> Path:
        """Where uploads are written before they are moved into a run (same file system)."""
        folder = self.settings.data_dir / "tmp" / "uploads"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def rundir(self, run_id: str) -> RunDir:
        return RunDir.of(self.settings.data_dir, run_id)

    @staticmethod
    def _load(tx: Tx, actor: Actor, run_id: str, access: Access = Access.READ) -> Run:
        run = tx.get_run(run_id)
        if run is None or not (
            allowed(actor, run.owner_id, access)  # the owner or an admin: no share lookup
            or allowed(actor, run.owner_id, access, tx.shared_with(RUN_KIND, run_id))
        ):
            raise NotFound(f"no run {run_id}")
        if access is Access.WRITE and not allowed(actor, run.owner_id, Access.WRITE):
            raise PermissionDenied(f"run {run_id} is shared with you read-only")
        return run

    def load(self, tx: Tx, actor: Actor, run_id: str, access: Access = Access.READ) -> Run:
        """The run if ``actor`` may read (or write) it, else :class:`NotFound`."""
        return self._load(tx, actor, run_id, access)

    def _spec(self, tx: Tx, run: Run) -> WorkflowSpec:
        wf = tx.get_workflow(run.workflow_id) if run.workflow_id else None
        if wf is None:
            raise Conflict(f"the workflow of run {run.id} ({run.workflow_ref}) was deleted")
        return WorkflowSpec.model_validate(wf.spec)

    @staticmethod
    def _event(tx: Tx, run: Run, type_: str, actor: Actor | None, **data: Any) -> None:
        tx.add_event("run", run.id, type_, clock.now(), actor.username if actor else None, data)

    @contextmanager
    def _staging(self, actor: Actor, run_id: str) -> Iterator[tuple[Tx, Run, WorkflowSpec]]:
        with self.store.write() as tx:
            run = self._load(tx, actor, run_id, Access.WRITE)
            transition(run.state, "stage")
            yield tx, run, self._spec(tx, run)

    # -- params ---------------------------------------------------------------------------
    @staticmethod
    def _check_params(spec: WorkflowSpec, values: dict[str, Any]) -> None:
        problems = []
        for name, value in values.items():
            inp = spec.inputs.get(name)
            if inp is None:
                near = difflib.get_close_matches(name, list(spec.inputs), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                problems.append({"input": name, "message": f"no input {name!r}{hint}"})
            elif value is None:
                continue
            elif is_file_input(inp):
                problems.append(
                    {
                        "input": name,
                        "message": f"{name!r} is a {inp.type_name}: "
                        f"stage it with PUT /api/v1/runs/{{id}}/files/{name}",
                    }
                )
            elif (problem := check_value(inp, value)) is not None:
                problems.append({"input": name, "message": f"input {name!r}: {problem}"})
        if problems:
            raise InvalidInput(
                "; ".join(p["message"] for p in problems),
                errors=problems,
                input=problems[0]["input"],
            )

    def stage_params(self, actor: Actor, run_id: str, values: dict[str, Any]) -> Run:
        """Merge parameter values (null removes one), each checked against its input."""
        with self._staging(actor, run_id) as (tx, run, spec):
            values = job_params(spec, values, self.settings.data_root)
            self._check_params(spec, values)
            params = {**run.params, **values}
            params = {k: v for k, v in params.items() if v is not None}
            run = tx.update_run(run.id, params=params)
            self._event(tx, run, "staging.params", actor, names=sorted(values))
        return run

    # -- resources ------------------------------------------------------------------------
    def _check_resources(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        out = check_resources(self.settings, body)
        try:
            check_dask_user(self.settings, out["executor"], actor.username, actor.is_admin)
        except PermissionDenied:
            if body.get("executor"):
                raise
            out["executor"] = "local"  # the server's default is dask, not for this user
        return out

    def _priority(self, actor: Actor, value: int | None) -> dict[str, int]:
        """The run's priority as ``actor`` sets it: an admin's orders runs of every user
        (``admin_priority``); a user's orders only their own runs (``priority``)."""
        if value is not None and not -MAX_PRIORITY <= value <= MAX_PRIORITY:
            raise InvalidInput(
                f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", field="priority"
            )
        return {"admin_priority" if actor.is_admin else "priority": value or 0}

    def set_resources(self, actor: Actor, run_id: str, body: dict[str, Any]) -> Run:
        resources = self._check_resources(actor, body)
        priority = self._priority(actor, body.get("priority"))
        with self._staging(actor, run_id) as (tx, run, spec):
            self._local_unless_chosen(resources, body, spec)
            run = tx.update_run(run.id, resources=resources, **priority)
            self._event(tx, run, "staging.resources", actor, resources=resources, **priority)
        return run

    @staticmethod
    def _local_unless_chosen(res: dict[str, Any], body: dict[str, Any], spec: WorkflowSpec) -> None:
        """The server's default executor is slurm or dask: CWL workflows and workflows with
        stream ports, which run locally only, run locally unless the run chose it itself."""
        chosen = bool(body.get("executor"))
        local_only = is_cwl(spec) or bool(stream_ports(spec))
        if res["executor"] in ("slurm", "dask") and not chosen and local_only:
            res["executor"] = "local"

    # -- create ---------------------------------------------------------------------------
    def create(
        self,
        actor: Actor,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        start: bool = False,
        callbacks: list[Subscription] | None = None,
        *,
        files: dict[str, list[str]] | None = None,
        link: Callable[[Tx, Run], None] | None = None,
    ) -> Run:
        """A new run.  ``callbacks``: webhook subscriptions from :meth:`Webhooks.callbacks`,
        made in the run's transaction (so they see its first events); ``files`` are file
        inputs read in place (another run's outputs); ``link(tx, run)`` runs in the creating
        transaction (graphs, sub-workflows)."""
        wf = self.workflows.cached(actor, workflow)
        if wf is None:
            wf = self._resolve(actor, workflow)
        run, spec = self._new_run(actor, wf, params, resources, tags)
        return self.insert(actor, run, wf, spec, start, files or {}, link, callbacks)

    async def create_async(
        self,
        actor: Actor,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        start: bool = False,
    ) -> Run:
        """:meth:`create` (without callbacks, files or links) for the event loop: checked in
        the loop and written by the group commit, so no worker thread waits for the write
        lock — the path of a submission under load."""
        wf = self.workflows.cached(actor, workflow)
        if wf is None:
            wf = await to_thread.run_sync(self._resolve, actor, workflow)
        run, spec = self._new_run(actor, wf, params, resources, tags)
        if stream_ports(spec):
            files: dict[str, list[str]] = {}
            return await to_thread.run_sync(self.insert, actor, run, wf, spec, start, files)
        run, events = self._first_rows(actor, run, wf, spec, start, {})
        await asyncio.wrap_future(self._group.submit((run, events)))
        self._created(run, start, None)
        return run

    def _resolve(self, actor: Actor, workflow: str) -> Workflow:
        with self.store.read() as tx:
            return self.workflows.resolve(tx, actor, workflow)

    def _new_run(
        self,
        actor: Actor,
        wf: Workflow,
        params: dict[str, Any] | None,
        resources: dict[str, Any] | None,
        tags: list[str] | None,
    ) -> tuple[Run, WorkflowSpec]:
        """A checked, not yet stored run of ``wf`` (and the workflow's spec)."""
        for tag in tags or []:
            check_name(tag, field="tags", what="tag")
        res = self._check_resources(actor, resources or {})
        priority = self._priority(actor, (resources or {}).get("priority"))
        spec = self.spec_of(wf)
        self._local_unless_chosen(res, resources or {}, spec)
        params = job_params(spec, params or {}, self.settings.data_root)
        self._check_params(spec, params)
        now = clock.now()
        run = Run(
            new_id("run"),
            actor.user_id,
            wf.id,
            wf.ref,
            RunState.STAGED,
            now,
            now,
            params={k: v for k, v in (params or {}).items() if v is not None},
            resources=res,
            tags=list(dict.fromkeys(tags or [])),
            priority=priority.get("priority", 0),
            admin_priority=priority.get("admin_priority", 0),
        )
        return run, spec

    def _first_rows(
        self,
        actor: Actor,
        run: Run,
        wf: Workflow,
        spec: WorkflowSpec,
        start: bool,
        files: dict[str, list[str]],
    ) -> tuple[Run, list[EventRow]]:
        """The run as stored (queued when ``start``) and its first events."""
        now = run.created_at
        events: list[EventRow] = [
            ("run", run.id, "run.staged", now, actor.username, {"workflow": wf.ref})
        ]
        if start:  # a new run has only these files: decide without reading the store
            problems, values = self._plan(run, wf, spec, files)
            executor = str(run.resources.get("executor") or "")
            problems += dask_secret_problems(self.settings, executor, spec)
            if problems:
                raise InvalidInput(
                    "the run cannot start: " + "; ".join(p["message"] for p in problems),
                    errors=problems,
                )
            run = dataclasses.replace(
                run,
                state=transition(run.state, "start").target,
                queued_at=now,
                params=values,
                **self._owned(run),
            )
            events.append(("run", run.id, "run.queued", now, actor.username, {"from": "staged"}))
        return run, events

    def _owned(self, run: Run) -> dict[str, Any]:
        """A run queued through this server is its scheduler's from then on (in the same
        transaction), so that the scheduler starts it without first committing a claim;
        other instances leave it alone while this one's lease holds."""
        if self.scheduler is None:
            return {}
        return {"owner_instance": self.scheduler.instance_id, "fence": run.fence + 1}

    def _created(self, run: Run, start: bool, callbacks: list[Subscription] | None) -> None:
        if callbacks and self.webhooks is not None:
            self.webhooks.changed()
        if start and self.scheduler is not None:
            self.scheduler.notify(run)

    def insert(
        self,
        actor: Actor,
        run: Run,
        wf: Workflow,
        spec: WorkflowSpec,
        start: bool,
        files: dict[str, list[str]],
        link: Callable[[Tx, Run], None] | None = None,
        callbacks: list[Subscription] | None = None,
    ) -> Run:
        """Store a new (checked) run, staged or queued, in one transaction."""
        run, events = self._first_rows(actor, run, wf, spec, start, files)
        staged = [
            StagedFile(run.id, name, Path(p).name, p, _size(p), None, "run_output", run.created_at)
            for name, paths in files.items()
            for p in paths
        ]
        ports = stream_ports(spec)
        if not (callbacks or staged or ports or link):  # the common case, under load
            self._group.write((run, events))
        else:
            with self.store.write() as tx:  # one short transaction: all or nothing
                tx.add_run(run)
                if link is not None:  # first: it may lock what it links to (graphs)
                    link(tx, run)
                if callbacks and self.webhooks is not None:
                    self.webhooks.add_to_run(tx, actor, run.id, callbacks)
                for f in staged:
                    tx.put_staged_file(f)
                tx.add_events(events)
                for direction, name in ports:
                    tx.lock_port(run.id, direction, name)
        self._created(run, start, callbacks)
        return run

    def close(self) -> None:
        """Commit the creations in flight (after the scheduler stopped making runs)."""
        self._group.close()

    def spec_of(self, wf: Workflow) -> WorkflowSpec:
        """The parsed spec of a workflow version (immutable, so kept)."""
        spec = self._specs.get(wf.id)
        if spec is None:
            if len(self._specs) > 1000:
                self._specs.clear()
            spec = self._specs[wf.id] = WorkflowSpec.model_validate(wf.spec)
        return spec

    # -- validate and start ---------------------------------------------------------------
    def _problems(
        self, tx: Tx, run: Run, wf: Workflow | None = None, spec: WorkflowSpec | None = None
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        spec = spec or self._spec(tx, run)
        if wf is None and run.workflow_id:
            wf = tx.get_workflow(run.workflow_id)
        files: dict[str, list[str]] = {}
        for f in tx.list_staged_files(run.id):
            files.setdefault(f.input, []).append(f.path)
        problems, values = self._plan(run, wf, spec, files)
        executor = str(run.resources.get("executor") or "")
        return problems + dask_secret_problems(self.settings, executor, spec), values

    @staticmethod
    def _plan(
        run: Run, wf: Workflow | None, spec: WorkflowSpec, files: dict[str, list[str]]
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """What stops the run from starting, and the input values it would start with."""
        values: dict[str, Any] = {}
        problems: list[dict[str, str]] = []
        job = has_job(spec, run.params)  # a CWL job document gives every CWL input
        for name, inp in spec.inputs.items():
            if is_file_input(inp) and name in files:
                values[name] = files[name] if inp.type == "array" else files[name][-1]
            elif name in run.params:
                values[name] = run.params[name]
            elif inp.default is not None and not job:
                values[name] = inp.default
            elif inp.type == "stream":
                continue  # records are pushed into it while the run goes on
            elif inp.is_required and not job:
                how = "stage a file" if is_file_input(inp) else "set a value"
                problems.append(
                    {"input": name, "message": f"required input {name!r} has no value: {how}"}
                )
        problems += start_problems(spec, run.params, files)  # CWL job documents
        cluster = run.resources.get("executor")
        if cluster in ("slurm", "dask"):
            where = "Slurm" if cluster == "slurm" else "Dask"
            if is_cwl(spec):
                problems.append(
                    {
                        "resource": "executor",
                        "message": f"CWL workflows run with the local executor, not {cluster}",
                    }
                )
            if stream_ports(spec):
                problems.append(
                    {
                        "resource": "executor",
                        "message": "workflows with stream ports run with the local executor: "
                        f"a step on {where} cannot be fed or tailed while it runs",
                    }
                )
        elif run.resources.get("executor") == "inprocess" and is_cwl(spec):
            problems.append(
                {
                    "resource": "executor",
                    "message": "CWL workflows run with the local executor (cwltool in "
                    "its own process group), not inprocess",
                }
            )
        elif run.resources.get("executor") == "inprocess" and not (wf and wf.trusted):
            problems.append(
                {
                    "resource": "executor",
                    "message": "the inprocess executor "
                    "runs trusted workflows only: ask an admin to trust this one",
                }
            )
        return problems, values

    def validate(self, actor: Actor, run_id: str) -> list[dict[str, str]]:
        """A dry run of start: what would stop it."""
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id)
            return self._problems(tx, run)[0]

    def _queue(
        self,
        tx: Tx,
        actor: Actor,
        run: Run,
        wf: Workflow | None = None,
        spec: WorkflowSpec | None = None,
    ) -> Run:
        rule = transition(run.state, "start")
        problems, values = self._problems(tx, run, wf, spec)
        if problems:
            raise InvalidInput(
                "the run cannot start: " + "; ".join(p["message"] for p in problems),
                errors=problems,
            )
        now = clock.now()
        changes: dict[str, Any] = {
            "state": rule.target,
            "state_since": now,
            "queued_at": now,
            "params": values,
            **self._owned(run),
        }
        tx.set_run(run.id, **changes)
        run = dataclasses.replace(run, **changes)
        self._event(tx, run, "run.queued", actor, **{"from": "staged"})
        return run

    def start(self, actor: Actor, run_id: str) -> Run:
        with self.store.write() as tx:
            run = self._queue(tx, actor, self._load(tx, actor, run_id, Access.WRITE))
        if self.scheduler is not None:
            self.scheduler.notify(run)
        return run

    # -- reading --------------------------------------------------------------------------
    def get(self, actor: Actor, run_id: str) -> RunView:
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id)
            return RunView(run, tx.list_steps(run.id))

    def status(
        self, actor: Actor, run_id: str
    ) -> tuple[Run, dict[str, int], list[str], list[StreamPort]]:
        """A run with its steps counted by state, the ones now running and its ports."""
        with self.store.read() as tx:
            return self.status_in(tx, actor, run_id)

    def status_in(
        self, tx: Tx, actor: Actor, run_id: str
    ) -> tuple[Run, dict[str, int], list[str], list[StreamPort]]:
        """:meth:`status` in a transaction of the caller's."""
        run = self._load(tx, actor, run_id)
        counts, current = tx.step_summary(run.id)
        return run, counts, current, tx.list_ports(run.id)

    def list_runs(self, actor: Actor, *, owner: str | None = None, **filters: Any) -> list[Run]:
        with self.store.read() as tx:
            owner_id = None
            if owner is not None:
                user = tx.get_user_by_name(owner)
                if user is None or (not actor.is_admin and user.id != actor.user_id):
                    return []
                owner_id = user.id
            viewer = None if actor.is_admin else actor.user_id
            return tx.list_runs(viewer, owner_id=owner_id, **filters)

    def log(
        self, actor: Actor, run_id: str, step: str, index: int, attempt: int | None, stream: str
    ) -> Path:
        view = self.get(actor, run_id)
        rec = next((s for s in view.steps if s.name == step and s.index == index), None)
        if rec is None:
            raise NotFound(
                f"run {run_id} has no step {step!r}" + (f" instance {index}" if index >= 0 else "")
            )
        attempt = attempt or rec.attempts
        if not 1 <= attempt <= max(rec.attempts, 1):
            raise NotFound(f"step {step!r} has no attempt {attempt}")
        if attempt == rec.attempts and rec.state is StepState.RUNNING:
            with self.store.read() as tx:
                wf = tx.get_workflow(view.run.workflow_id) if view.run.workflow_id else None
            steps = (wf.spec.get("steps") or {}) if wf is not None else {}
            if isinstance(steps.get(step), dict) and steps[step].get("secrets"):
                raise Conflict(
                    f"step {step!r} has secrets: its log is served once the attempt has "
                    "ended, with their values masked",
                    state=rec.state.value,
                )
        return self.rundir(run_id).log(step, index, attempt, stream)

    # -- control --------------------------------------------------------------------------
    def control(self, actor: Actor, run_id: str, action: str, **options: Any) -> Run:
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id, Access.WRITE)
        sched = self.scheduler
        if (
            run.state in (RunState.QUEUED, RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)
            and sched is not None
        ):
            # Asked in the scheduler's loop, after the hand-over of a run queued just before
            # (which the loop takes in the order it was handed over): not "is it active?"
            # from this thread first, which could answer before the loop took it.
            try:
                return sched.command(action, run.id, actor.username, options)
            except NotFound:  # it ended meanwhile: answer from its final state
                with self.store.read() as tx:
                    run = self._load(tx, actor, run_id)
        rule = transition(run.state, action)
        if run.state is not RunState.STAGED:
            raise Conflict(
                f"run {run.id} is {run.state.value} but not known to the scheduler; try again",
                state=run.state.value,
            )
        with self.store.write() as tx:
            now = clock.now()
            run = tx.update_run(run.id, state=rule.target, state_since=now, finished_at=now)
            if rule.target is RunState.KILLED:
                forget_removed_files(tx, run.id)
            self._event(tx, run, f"run.{rule.target.value}", actor, **{"from": "staged"})
        if rule.target is RunState.KILLED:
            self.rundir(run.id).remove_work()
        return run

    def set_keep(self, actor: Actor, run_id: str, keep: bool) -> Run:
        """Exempt a run from retention (or no longer): its owner or an admin."""
        with self.store.write() as tx:
            run = self._load(tx, actor, run_id, Access.WRITE)
            if run.keep == keep:
                return run
            return tx.update_run(run.id, keep=keep)

    def delete(self, actor: Actor | None, run_id: str) -> None:
        """Delete an ended run: its files first, then its record (``actor`` None: the
        operator, ``flowdeck admin purge``).  Freeing the files first frees the space the
        record's deletion needs on a full disk; should that fail, the run stays listed
        without its files, and deleting it again finishes."""
        who = actor or OPERATOR
        with self.store.read() as tx:
            run = self._load(tx, who, run_id, Access.WRITE)
        transition(run.state, "delete")  # an ended run: nothing writes its files any more
        self.rundir(run.id).remove()
        with self.store.write() as tx:
            run = self._load(tx, who, run_id, Access.WRITE)
            transition(run.state, "delete")
            tx.delete_run(run.id)
            tx.add_audit(
                clock.now(),
                "run.delete",
                actor_id=actor.user_id if actor else None,
                actor_name=actor.username if actor else None,
                target=run.id,
            )

    # -- products -------------------------------------------------------------------------
    def products(self, actor: Actor, run_id: str) -> list[Product]:
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id)
            return tx.list_products(run.id)

    def product_path(self, product: Product) -> Path | None:
        """The file of a product, never outside its run's directory."""
        rundir = self.rundir(product.run_id)
        path = rundir.root / product.path
        return path if rundir.contains(path) and path.is_file() else None

    def product(self, actor: Actor, run_id: str, product_id: str) -> tuple[Product, Path]:
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id)
            found = tx.get_product(product_id)
        path = self.product_path(found) if found and found.run_id == run.id else None
        if found is None or path is None:
            raise NotFound(f"run {run_id} has no product {product_id}")
        return found, path


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
