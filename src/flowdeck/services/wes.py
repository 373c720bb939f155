"""GA4GH WES 1.1 on top of flowdeck's runs: a WES run is a normal flowdeck run (same
table, states, events, privileges, staging, control and products)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote

from anyio import to_thread

from flowdeck import __version__, clock
from flowdeck.domain.privilege import Actor
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.spec import WorkflowSpec
from flowdeck.domain.wes import ALL_WES_STATES, wes_state
from flowdeck.domain.workflows import Visibility, Workflow
from flowdeck.engines.cwl import (
    CWL_STEP,
    CWL_VERSIONS,
    ENGINE_INPUT,
    ENGINE_OPTIONS,
    OUTPUT_OBJECT,
    SHIM_FILE,
    SPEC_FILE,
    TASKS_FILE,
    cwl_version,
    is_cwl,
    is_job_document,
    main_file,
    main_file_path,
    takes_staged_files,
)
from flowdeck.engines.cwl_names import FILES_INPUT, JOB_INPUT, REQUEST_INPUT
from flowdeck.errors import FlowdeckError, InvalidInput, NotFound
from flowdeck.jsonlimits import check_depth
from flowdeck.services.context import Context
from flowdeck.services.cwl_workflows import content_ref
from flowdeck.services.wes_cwl import (
    WES_PATH,
    directory_files,
    located_job,
    native_outputs,
    rewrite_outputs,
    rundir_status,
    safe_relative,
)

__all__ = [
    "WES_PATH",
    "Attachment",
    "Submission",
    "Wes",
    "located_job",
    "safe_relative",
    "submission",
]

WES_VERSION = "1.1.0"
FLOWDECK_TYPE = "FLOWDECK"
MAX_PAGE = 500
_PORT_REF = re.compile(r"^\$\{\{ inputs\.([A-Za-z_][A-Za-z0-9_]*) \}\}$")
_TASK_TOKEN = re.compile(r"^[0-9]{1,18}$")  # ListTasks' page_token: the next index
_REF = re.compile(r"^([a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._+-]*$")


def iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


@dataclass(frozen=True)
class Attachment:
    """An attached file as received (read again from ``data``, from its start)."""

    sha256: str
    size: int
    data: BinaryIO


@dataclass
class Submission:
    workflow_url: str
    workflow_type: str
    workflow_type_version: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    engine_parameters: dict[str, str] = field(default_factory=dict)
    # the attachments by their relative names; ``files``: a folder holding them under those
    # names, once written (only when they are not stored already)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    files: Path | None = None

    @property
    def url(self) -> str:
        return unquote(self.workflow_url.removeprefix("file://")) if self.workflow_url else ""


def _json_object(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    check_depth(text, where=name)  # hook: JSON read from a request nests boundedly
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{name} is not JSON: {exc}", field=name) from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object", field=name)
    return value


def submission(form: dict[str, str], attachments: dict[str, Attachment]) -> Submission:
    """A RunRequest from its multipart fields and attachments (already read)."""
    for required in ("workflow_url", "workflow_type", "workflow_type_version"):
        if not form.get(required):
            raise InvalidInput(f"{required} is required", field=required)
    tags = _json_object(form.get("tags"), "tags")
    engine = _json_object(form.get("workflow_engine_parameters"), "workflow_engine_parameters")
    engine_name = form.get("workflow_engine")
    if engine_name and engine_name.lower() not in ("cwltool", "flowdeck"):
        raise InvalidInput(
            f"workflow_engine {engine_name!r} is not supported (cwltool, flowdeck)",
            field="workflow_engine",
        )
    return Submission(
        workflow_url=form["workflow_url"],
        workflow_type=form["workflow_type"].upper(),
        workflow_type_version=form["workflow_type_version"],
        params=_json_object(form.get("workflow_params"), "workflow_params"),
        tags={str(k): str(v) for k, v in tags.items()},
        engine_parameters={str(k): "" if v is None else str(v) for k, v in engine.items()},
        attachments=attachments,
    )


def engine_words(params: dict[str, str]) -> list[str]:
    """workflow_engine_parameters as cwltool options, from the allowlist only."""
    words = []
    for name, value in params.items():
        flag = name if name.startswith("--") else f"--{name}"
        if flag not in ENGINE_OPTIONS:
            raise InvalidInput(
                f"workflow_engine_parameters: {name!r} is not allowed (allowed: "
                f"{', '.join(ENGINE_OPTIONS)})",
                field="workflow_engine_parameters",
            )
        values = ENGINE_OPTIONS[flag]
        if values:
            if value not in values:
                raise InvalidInput(
                    f"workflow_engine_parameters: {flag} takes one of {', '.join(values)}",
                    field="workflow_engine_parameters",
                )
            words.append(f"{flag}={value}")
        elif value.lower() not in ("", "true", "1", "yes"):
            continue  # "false": not given
        else:
            words.append(flag)
    return words


def _tags(sub: Submission) -> list[str]:
    return [f"{k}={v}" if v else k for k, v in sub.tags.items()]


def _ports(spec: WorkflowSpec) -> dict[str, str]:
    """WES parameter name → flowdeck input (CWL ids may differ from port names)."""
    if not is_cwl(spec):
        return {n: n for n in spec.inputs}
    bindings = spec.steps[CWL_STEP].with_.get("inputs") or {}
    ports = {}
    for cwl_id, template in bindings.items():
        m = _PORT_REF.match(str(template))
        if m:
            ports[cwl_id] = m.group(1)
    return ports


class Wes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- service-info ---------------------------------------------------------------------
    def service_info(self, actor: Actor, base_url: str) -> dict[str, Any]:
        counts = dict.fromkeys(ALL_WES_STATES, 0)
        viewer = None if actor.is_admin else actor.user_id
        with self.ctx.store.read() as tx:
            for state, n in tx.count_runs_by_state(viewer).items():
                counts[wes_state(state)] += n
        from importlib.metadata import PackageNotFoundError, version

        try:
            cwltool_version = version("cwltool")
        except PackageNotFoundError:  # pragma: no cover - a dependency
            cwltool_version = "unknown"
        words = ", ".join(
            f"{k}={'|'.join(v)}" if v else f"{k}=true" for k, v in ENGINE_OPTIONS.items()
        )
        return {
            "id": "org.flowdeck.wes",
            "name": "flowdeck",
            "type": {"group": "org.ga4gh", "artifact": "wes", "version": WES_VERSION},
            "description": "flowdeck: a workflow job manager running CWL through cwltool",
            "organization": {"name": "flowdeck", "url": base_url},
            "documentationUrl": f"{base_url}docs",
            "version": __version__,
            "workflow_type_versions": {
                "CWL": {"workflow_type_version": list(CWL_VERSIONS)},
                FLOWDECK_TYPE: {"workflow_type_version": ["1"]},
            },
            "supported_wes_versions": [WES_VERSION],
            "supported_filesystem_protocols": ["file"],
            "workflow_engine_versions": {
                "cwltool": {"workflow_engine_version": [cwltool_version]},
                "flowdeck": {"workflow_engine_version": [__version__]},
            },
            "default_workflow_engine_parameters": [
                {"name": flag, "type": "string" if vals else "boolean", "default_value": d}
                for flag, vals, d in [
                    (f, v, v[0] if v else "false") for f, v in ENGINE_OPTIONS.items()
                ]
            ],
            "system_state_counts": counts,
            "auth_instructions_url": f"{base_url}docs#/auth",
            "tags": {
                "containers": "off: cwltool runs with --no-container",
                "engine_parameters": words,
            },
        }

    # -- submit ---------------------------------------------------------------------------
    @staticmethod
    def _check_type(sub: Submission) -> None:
        if sub.workflow_type == "CWL":
            if sub.workflow_type_version not in CWL_VERSIONS:
                raise InvalidInput(
                    f"workflow_type_version {sub.workflow_type_version!r} is not supported "
                    f"for CWL ({', '.join(CWL_VERSIONS)})",
                    field="workflow_type_version",
                )
        elif sub.workflow_type == FLOWDECK_TYPE:
            if sub.workflow_type_version != "1":
                raise InvalidInput(
                    "FLOWDECK workflows are version 1", field="workflow_type_version"
                )
        else:
            raise InvalidInput(
                f"workflow_type {sub.workflow_type!r} is not supported (CWL, FLOWDECK)",
                field="workflow_type",
            )

    def _workflow(self, actor: Actor, sub: Submission) -> Workflow:
        self._check_type(sub)
        url = sub.url
        attached = main_file_path(url) in sub.attachments
        if attached and sub.files is not None and sub.workflow_type == "CWL":
            copy = self.ctx.workflows.new_temp_dir("wes-wf-")
            try:
                shutil.copytree(sub.files, copy, dirs_exist_ok=True, copy_function=os.link)
                pushed = self.ctx.cwl.push_dir(
                    actor, copy, url, Visibility.PRIVATE, name=None, job_document=True
                )
            finally:
                shutil.rmtree(copy, ignore_errors=True)
            return pushed.workflow
        if _REF.match(url):
            wf = self.ctx.workflows.get(actor, url)
            kind = "CWL" if is_cwl(self.ctx.runs.spec_of(wf)) else FLOWDECK_TYPE
            if kind != sub.workflow_type:
                raise InvalidInput(
                    f"{url} is a {kind} workflow, not {sub.workflow_type}", field="workflow_type"
                )
            return wf
        raise InvalidInput(
            f"workflow_url {sub.workflow_url!r} is neither an attached file nor a stored "
            "workflow (name@version); flowdeck does not fetch URLs",
            field="workflow_url",
        )

    def _locate(self, sub: Submission, name: str, value: Any) -> tuple[str, Path]:
        """An input file: ("attachment", file) or ("data_root", relative path)."""
        loc = value
        if isinstance(value, dict):
            loc = value.get("location") or value.get("path")
        if not isinstance(loc, str) or not loc:
            raise InvalidInput(f"input {name!r}: a file needs a location", field=name)
        path = unquote(loc.removeprefix("file://"))
        if sub.files is not None and not path.startswith("/") and path in sub.attachments:
            return "attachment", sub.files / path
        root = self.ctx.settings.data_root
        if root is not None and path.startswith("/"):
            real = Path(path).resolve()
            if real.is_relative_to(root.resolve()) and real.exists():
                return "data_root", real.relative_to(root.resolve())
        base = PurePosixPath(path).name
        matches = [a for a in sub.attachments if PurePosixPath(a).name == base]
        if len(matches) == 1 and sub.files is not None:
            return "attachment", sub.files / matches[0]
        raise InvalidInput(
            f"input {name!r}: {loc!r} is not an attachment"
            + (" (several attachments have that name)" if matches else "")
            + "; attach the file, or use a path under the server's data root",
            field=name,
        )

    async def submit_async(self, actor: Actor, sub: Submission) -> str:
        """RunWorkflow.  CWL files already stored (the same attachments as an earlier
        submission of the caller's) are not written again: the run is checked in the event
        loop and stored, queued, with its events by the group commit.  Anything else goes
        through :meth:`submit` in a worker thread."""
        wf = await self._stored(actor, sub)
        if wf is None:
            return str(await to_thread.run_sync(self.submit, actor, sub))
        job = self._job(sub, self.ctx.runs.spec_of(wf))
        own = f"{wf.name}@{wf.version}"  # the caller's own: resolved from the cache
        run = await self.ctx.runs.create_async(actor, own, params=job, tags=_tags(sub), start=True)
        return run.id

    async def _stored(self, actor: Actor, sub: Submission) -> Workflow | None:
        """The caller's stored CWL workflow of exactly these attachments and main file (a
        job-document one, as :meth:`_workflow` stores them), if there is one."""
        if sub.workflow_type != "CWL" or sub.workflow_type_version not in CWL_VERSIONS:
            return None
        url = sub.url
        reserved = {SHIM_FILE, SPEC_FILE} & sub.attachments.keys()  # refused when stored
        if main_file_path(url) not in sub.attachments or reserved:
            return None
        files = {name: a.sha256 for name, a in sub.attachments.items()}
        ref = content_ref(url, files, job_document=True)
        wf = self.ctx.workflows.cached(actor, ref)
        if wf is None:
            wf = await to_thread.run_sync(self._own, actor, ref)
        if wf is None or not is_job_document(self.ctx.runs.spec_of(wf)):
            return None
        return wf

    def _own(self, actor: Actor, ref: str) -> Workflow | None:
        with self.ctx.store.read() as tx:
            try:
                wf = self.ctx.workflows.resolve(tx, actor, ref)
            except NotFound:
                return None
        return wf if wf.owner_id == actor.user_id else None

    def _job(self, sub: Submission, spec: WorkflowSpec) -> dict[str, Any]:
        """The params of a run of a job-document workflow: the job as sent, relocated."""
        sent = located_job(sub.params, set(sub.attachments), self.ctx.settings.data_root)
        job: dict[str, Any] = {JOB_INPUT: json.dumps(sent)}
        if REQUEST_INPUT in spec.inputs:
            job[REQUEST_INPUT] = json.dumps(sub.params)
        words = engine_words(sub.engine_parameters)
        return job | ({ENGINE_INPUT: words} if words else {})

    def submit(self, actor: Actor, sub: Submission) -> str:
        """RunWorkflow in a worker thread: the attachments are written to a temporary
        folder first (CWL files new to the store are moved into it from there)."""
        if sub.files is not None or not sub.attachments:
            return self._submit(actor, sub)
        folder = self.ctx.workflows.new_temp_dir("wes-")
        try:
            for name, attachment in sub.attachments.items():
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                attachment.data.seek(0)
                with target.open("wb") as out:
                    shutil.copyfileobj(attachment.data, out)
            sub.files = folder
            return self._submit(actor, sub)
        finally:
            sub.files = None
            shutil.rmtree(folder, ignore_errors=True)

    def _submit(self, actor: Actor, sub: Submission) -> str:
        wf = self._workflow(actor, sub)
        spec = self.ctx.runs.spec_of(wf)
        if is_job_document(spec):
            job = self._job(sub, spec)
            staged = takes_staged_files(spec) and sub.files is not None and sub.attachments
            if not staged:  # queued in the transaction that stores it
                return self.ctx.runs.create(actor, wf.ref, job, tags=_tags(sub), start=True).id
            assert sub.files is not None
            run = self.ctx.runs.create(actor, wf.ref, params=job, tags=_tags(sub))
            try:  # a stored workflow: the attachments are the run's staged files
                for name in sub.attachments:
                    self._stage(actor, run.id, FILES_INPUT, sub.files / name, name)
                self.ctx.runs.start(actor, run.id)
            except BaseException:
                self._discard(actor, run.id)
                raise
            return run.id
        ports = _ports(spec)
        params: dict[str, Any] = {}
        files: list[tuple[str, str, Path]] = []
        for key, value in sub.params.items():
            port = ports.get(key)
            if port is None:
                raise InvalidInput(f"workflow_params: the workflow has no input {key!r}", field=key)
            inp = spec.inputs[port]
            if value is None:
                continue
            if inp.type in ("file", "directory") or inp.items in ("file", "directory"):
                for item in value if isinstance(value, list) else [value]:
                    kind, where = self._locate(sub, key, item)
                    files.append((port, kind, where))
            else:
                params[port] = value
        words = engine_words(sub.engine_parameters)
        if words:
            if ENGINE_INPUT not in spec.inputs:
                raise InvalidInput(
                    "workflow_engine_parameters are for CWL workflows",
                    field="workflow_engine_parameters",
                )
            params[ENGINE_INPUT] = words
        run = self.ctx.runs.create(actor, wf.ref, params=params, tags=_tags(sub))
        try:
            for port, kind, where in files:
                if kind == "data_root":
                    self.ctx.runs.reference(actor, run.id, port, data_path=str(where))
                else:
                    self._stage(actor, run.id, port, where)
            self.ctx.runs.start(actor, run.id)
        except BaseException:
            self._discard(actor, run.id)
            raise
        return run.id

    def _stage(
        self, actor: Actor, run_id: str, port: str, path: Path, name: str | None = None
    ) -> None:
        temp = self.ctx.workflows.new_temp_dir("wes-in-") / path.name
        try:
            os.link(path, temp)
        except OSError:
            shutil.copyfile(path, temp)
        digest = hashlib.sha256()
        with temp.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        try:
            size = temp.stat().st_size
            filename = name or path.name
            self.ctx.runs.stage_file(actor, run_id, port, filename, temp, size, digest.hexdigest())
        finally:
            temp.unlink(missing_ok=True)
            temp.parent.rmdir()

    def _discard(self, actor: Actor, run_id: str) -> None:
        with contextlib.suppress(FlowdeckError):
            self.ctx.runs.control(actor, run_id, "kill")
        with contextlib.suppress(FlowdeckError):
            self.ctx.runs.delete(actor, run_id)

    # -- reading --------------------------------------------------------------------------
    def list_runs(self, actor: Actor, page_size: int | None, token: str | None) -> dict[str, Any]:
        size = min(page_size or 50, MAX_PAGE)
        snapshot, after = self._token(token)
        with self.ctx.store.read() as tx:
            viewer = None if actor.is_admin else actor.user_id
            runs = tx.list_runs(viewer, created_before=snapshot, after_id=after, limit=size + 1)
        more = len(runs) > size
        runs = runs[:size]
        nxt = ""
        if more and runs:
            raw = json.dumps({"t": snapshot.isoformat(), "after": runs[-1].id})
            nxt = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return {"runs": [self._summary(r) for r in runs], "next_page_token": nxt}

    @staticmethod
    def _token(token: str | None) -> tuple[datetime, str | None]:
        """(the snapshot's time: runs created later are not listed, the last id seen)."""
        if not token:
            return clock.now(), None
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return datetime.fromisoformat(data["t"]), str(data["after"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidInput(
                "page_token is not one this server gave", field="page_token"
            ) from exc

    @staticmethod
    def _summary(run: Run) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": run.id,
            "state": wes_state(run.state),
            "tags": {t.partition("=")[0]: t.partition("=")[2] for t in run.tags},
        }
        if run.started_at:
            out["start_time"] = iso(run.started_at)
        if run.finished_at:
            out["end_time"] = iso(run.finished_at)
        return out

    def status(self, actor: Actor, run_id: str) -> dict[str, Any]:
        with self.ctx.store.read() as tx:
            run = self.ctx.runs.load(tx, actor, run_id)
        return {"run_id": run.id, "state": wes_state(run.state)}

    def run_log(self, actor: Actor, run_id: str, base_url: str) -> dict[str, Any]:
        with self.ctx.store.read() as tx:
            run = self.ctx.runs.load(tx, actor, run_id)
            wf = tx.get_workflow(run.workflow_id) if run.workflow_id else None
            steps = tx.list_steps(run.id)
            products = tx.list_products(run.id)
        spec = self.ctx.runs.spec_of(wf) if wf else None
        cwl = spec is not None and is_cwl(spec)
        wes = f"{base_url}{WES_PATH}/runs/{run.id}"
        as_sent = spec is not None and is_job_document(spec) and bool(run.params.get(JOB_INPUT))
        sent = run.params.get(REQUEST_INPUT) or run.params.get(JOB_INPUT) or "{}"
        params = json.loads(str(sent)) if as_sent else None
        request: dict[str, Any] = {
            "workflow_type": "CWL" if cwl else FLOWDECK_TYPE,
            "workflow_type_version": "1",
            "workflow_url": run.workflow_ref,
            "workflow_params": self._params(run, spec) if params is None else params,
            "tags": self._summary(run)["tags"],
        }
        if cwl and spec is not None and wf is not None:
            request["workflow_url"] = main_file(spec) or run.workflow_ref
            request["workflow_type_version"] = (
                cwl_version(self.ctx.workflows.archive_dir(wf), spec) or "v1.2"
            )
            request["workflow_engine"] = "cwltool"
        log: dict[str, Any] = {"name": run.workflow_ref, "system_logs": []}
        if run.started_at:
            log["start_time"] = iso(run.started_at)
        if run.finished_at:
            log["end_time"] = iso(run.finished_at)
        if run.error:
            log["system_logs"].append(str(run.error.get("message", run.error)))
        first = next((s for s in steps if s.name == CWL_STEP), steps[0] if steps else None)
        if first is not None:
            q = f"&index={first.index}" if first.index >= 0 else ""
            log["stdout"] = f"{wes}/steps/{first.name}/logs?stream=stdout{q}"
            log["stderr"] = f"{wes}/steps/{first.name}/logs?stream=stderr{q}"
            if first.exit_code is not None and len(steps) == 1:
                log["exit_code"] = first.exit_code
            if cwl:  # cwltool's own status (33: an unsupported requirement), when it ran
                status = rundir_status(self.ctx.runs.rundir(run.id).step_dir(CWL_STEP, -1))
                if status is not None:
                    log["exit_code"] = status
        by_path = {p.path: p for p in products}
        rundir = self.ctx.runs.rundir(run.id).root
        outputs: Any = native_outputs(dict(run.outputs), by_path, rundir, wes)
        if cwl:
            outputs = rewrite_outputs(run.outputs.get(OUTPUT_OBJECT) or {}, by_path, rundir, wes)
        return {
            "run_id": run.id,
            "request": request,
            "state": wes_state(run.state),
            "run_log": log,
            "task_logs_url": f"{wes}/tasks",
            "outputs": outputs if isinstance(outputs, dict) else {"value": outputs},
        }

    @staticmethod
    def _params(run: Run, spec: WorkflowSpec | None) -> dict[str, Any]:
        if spec is None:
            return dict(run.params)
        back = {port: key for key, port in _ports(spec).items()}
        out: dict[str, Any] = {}
        for port, value in run.params.items():
            if port == ENGINE_INPUT or port not in back:
                continue
            inp = spec.inputs.get(port)
            if inp is not None and (inp.type in ("file", "directory") or inp.items in ("file",)):
                kind = "Directory" if "directory" in (inp.type, inp.items) else "File"
                items = value if isinstance(value, list) else [value]
                files = [{"class": kind, "basename": Path(str(v)).name} for v in items]
                value = files if isinstance(value, list) else files[0]
            out[back[port]] = value
        return out

    def directory(self, actor: Actor, run_id: str, where: str) -> tuple[str, list[Any]]:
        """An output Directory of a CWL run (its ``location``): its name and its files
        (zip member name, file)."""
        with self.ctx.store.read() as tx:
            run = self.ctx.runs.load(tx, actor, run_id)
            products = {p.path: p for p in tx.list_products(run.id)}
        rundir = self.ctx.runs.rundir(run.id).root
        return directory_files(run.outputs.get(OUTPUT_OBJECT), where, products, rundir)

    # -- tasks ----------------------------------------------------------------------------
    def _tasks(self, actor: Actor, run_id: str, base_url: str) -> list[dict[str, Any]]:
        with self.ctx.store.read() as tx:
            run = self.ctx.runs.load(tx, actor, run_id)
            wf = tx.get_workflow(run.workflow_id) if run.workflow_id else None
            steps = tx.list_steps(run.id)
        steps_url = f"{base_url}{WES_PATH}/runs/{run.id}/steps"
        if wf is not None and is_cwl(self.ctx.runs.spec_of(wf)):
            path = self.ctx.runs.rundir(run.id).step_dir(CWL_STEP, -1) / TASKS_FILE
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raw = []
            tasks = []
            for t in raw if isinstance(raw, list) else []:
                entry: dict[str, Any] = {
                    k: t[k]
                    for k in (
                        "id",
                        "name",
                        "cmd",
                        "start_time",
                        "end_time",
                        "exit_code",
                        "system_logs",
                    )
                    if k in t
                }
                entry["stderr"] = f"{steps_url}/{CWL_STEP}/logs?stream=stderr"
                entry["stdout"] = f"{steps_url}/{CWL_STEP}/logs?stream=stdout"
                tasks.append(entry)
            return tasks
        out = []
        for s in steps:
            task: dict[str, Any] = {"id": s.label, "name": s.label, "system_logs": []}
            if s.started_at:
                task["start_time"] = iso(s.started_at)
            if s.ended_at:
                task["end_time"] = iso(s.ended_at)
            if s.exit_code is not None:
                task["exit_code"] = s.exit_code
            if s.error:
                task["system_logs"].append(s.error)
            q = f"index={s.index}"
            task["stdout"] = f"{steps_url}/{s.name}/logs?stream=stdout&{q}"
            task["stderr"] = f"{steps_url}/{s.name}/logs?stream=stderr&{q}"
            out.append(task)
        return out

    def tasks(
        self, actor: Actor, run_id: str, page_size: int | None, token: str | None, base_url: str
    ) -> dict[str, Any]:
        """ListTasks answers no 400 (WES 1.1 declares none): a page_size that is not a
        positive number is the default; a page_token this server did not give is past the
        end (an empty last page)."""
        tasks = self._tasks(actor, run_id, base_url)
        start = 0
        if token:
            start = int(token) if _TASK_TOKEN.match(token) else len(tasks)
        size = min(page_size if page_size and page_size > 0 else 100, MAX_PAGE)
        page = tasks[start : start + size]
        nxt = str(start + size) if start + size < len(tasks) else ""
        return {"task_logs": page, "next_page_token": nxt}

    def task(self, actor: Actor, run_id: str, task_id: str, base_url: str) -> dict[str, Any]:
        for task in self._tasks(actor, run_id, base_url):
            if task["id"] == task_id:
                return task
        raise NotFound(f"run {run_id} has no task {task_id!r}")

    def cancel(self, actor: Actor, run_id: str) -> dict[str, Any]:
        with self.ctx.store.read() as tx:
            run = self.ctx.runs.load(tx, actor, run_id)
        if run.state is RunState.PAUSED:
            self.ctx.runs.control(actor, run_id, "kill")
        elif run.active:
            self.ctx.runs.control(actor, run_id, "stop", grace_s=self.ctx.settings.stop_grace_s)
        return {"run_id": run.id}
