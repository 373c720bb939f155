"""``flowdeck run …``: create, stage, resources, start, submit, status, list, control,
products and download.  ``watch`` and ``logs`` are in :mod:`flowdeck.cli.watch`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flowdeck import clock
from flowdeck.cli.common import fail, out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.params import collect_files, collect_params, split_pair
from flowdeck.cli.session import ServerOption, client_for
from flowdeck.cli.watch import logs, step_table, watch, watch_run

if TYPE_CHECKING:
    from flowdeck.client import Client, Run

run_app = group_app("run")

RunArg = Annotated[str, typer.Argument(help="The run's id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
GraceOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=3600,
        help="Seconds running steps get after SIGTERM before SIGKILL "
        "(default: the server's stop_grace_s).",
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="NAME=VALUE, typed by the workflow's input (repeatable)."),
]
ParamsFileOption = Annotated[
    Path | None, typer.Option("--params-file", help="A JSON or YAML mapping of values.")
]
FileOption = Annotated[
    list[str] | None,
    typer.Option("--file", "-f", help="INPUT=PATH: upload a file to a file input (repeatable)."),
]
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")]
CwlJobOption = Annotated[
    Path | None,
    typer.Option(
        "--cwl-job",
        help="CWL workflows: a job document (YAML or JSON) sent as it is, every CWL type "
        "and field; the local files it names are uploaded under their relative paths.",
    ),
]

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "system_error": "red",
    "killed": "magenta",
    "cancelled": "yellow",
    "paused": "yellow",
    "stopping": "yellow",
    "running": "cyan",
    "queued": "blue",
    "staged": "white",
}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _inputs(client: Client, workflow: str) -> dict[str, Any]:
    spec = client.workflow(workflow)["spec"]
    inputs: dict[str, Any] = spec.get("inputs") or {}
    return inputs


def _stage(
    client: Client, run: Run, inputs: dict[str, Any], params: dict[str, Any], files: list[str]
) -> None:
    for name, path in collect_files(inputs, files):
        run.upload(name, path)
    if params:
        run.stage_params(params)


def _run(client: Client, run_id: str) -> Run:
    """A run by its id, without asking the server for its status."""
    from flowdeck.client import Run

    return Run(client, {"id": run_id, "state": "?"})


def _print_run(run: Run, as_json: bool, verb: str) -> None:
    if as_json:
        out.print_json(data=run.data)
    else:
        out.print(f"{verb} run [bold]{run.id}[/] ({run.data['workflow']}): {styled(run.state)}")


def _create(
    client: Client,
    workflow: str,
    param: list[str] | None,
    params_file: Path | None,
    file: list[str] | None,
    tag: list[str] | None,
    cwl_job: Path | None = None,
) -> Run:
    inputs = _inputs(client, workflow)
    params = collect_params(inputs, param or [], params_file)
    collect_files(inputs, file or [])  # check every path before creating anything
    if cwl_job is not None and not cwl_job.is_file():
        fail(f"no job document {str(cwl_job)!r}")
    run = client.create_run(workflow, tags=tag, cwl_job=cwl_job)
    _stage(client, run, inputs, params, file or [])
    return run


@run_app.command("create")
def create(
    workflow: Annotated[str, typer.Argument(help="name@version (or owner/name@version)")],
    param: ParamOption = None,
    params_file: ParamsFileOption = None,
    file: FileOption = None,
    tag: TagOption = None,
    cwl_job: CwlJobOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a staged run (with the given values and files staged)."""
    with reported(), client_for(server) as client:
        run = _create(client, workflow, param, params_file, file, tag, cwl_job)
        run.status()
    _print_run(run, as_json, "created")


@run_app.command("stage")
def stage(
    run_id: RunArg,
    param: ParamOption = None,
    params_file: ParamsFileOption = None,
    file: FileOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stage more values and files on a staged run."""
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        inputs = _inputs(client, run.data["workflow"])
        params = collect_params(inputs, param or [], params_file)
        _stage(client, run, inputs, params, file or [])
        run.status()
    _print_run(run, as_json, "staged")


@run_app.command("resources")
def resources(
    run_id: RunArg,
    executor: Annotated[
        str | None, typer.Option(help="local, inprocess, slurm or dask (if the server offers it).")
    ] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs the run may use at once.")] = None,
    memory: Annotated[str | None, typer.Option(help="Per step: MiB or '2GiB'.")] = None,
    walltime: Annotated[str | None, typer.Option(help="The whole run: seconds or '2h'.")] = None,
    priority: Annotated[int | None, typer.Option(help="-100..100; higher first.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE for every step (repeatable).")
    ] = None,
    sbatch: Annotated[
        list[str] | None,
        typer.Option(
            "--sbatch",
            help="On Slurm: an sbatch option the server allows, NAME=VALUE or NAME for a "
            "flag (e.g. constraint=avx2; repeatable).",
        ),
    ] = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a staged run's resources."""
    body: dict[str, Any] = {"executor": executor or "local"}
    for key, value in (
        ("cpus", cpus),
        ("memory", memory),
        ("walltime", walltime),
        ("priority", priority),
    ):
        if value is not None:
            body[key] = value
    if env:
        body["env"] = dict(split_pair(e, "--env") for e in env)
    if sbatch:
        body["slurm_options"] = {
            name.removeprefix("--"): value if sep else True
            for name, sep, value in (o.partition("=") for o in sbatch)
        }
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        run.set_resources(**body)
    if as_json:
        out.print_json(data=run.data)
    else:
        out.print(f"run {run.id}: resources {run.data['resources']}")


@run_app.command("start")
def start(run_id: RunArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Queue a staged run."""
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        run.start()
    _print_run(run, as_json, "started")


@run_app.command("submit")
def submit(
    workflow: Annotated[str, typer.Argument(help="name@version (or owner/name@version)")],
    param: ParamOption = None,
    params_file: ParamsFileOption = None,
    file: FileOption = None,
    tag: TagOption = None,
    cwl_job: CwlJobOption = None,
    do_watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Then watch it (exit code as for watch).")
    ] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create, stage and start a run in one go."""
    with reported(), client_for(server) as client:
        run = _create(client, workflow, param, params_file, file, tag, cwl_job)
        run.start()
        if not do_watch:
            _print_run(run, as_json, "submitted")
            return
        if not as_json:
            out.print(f"submitted run [bold]{run.id}[/]")
        watch_run(run, as_json)


def shown_value(value: Any, base_url: str) -> str:
    """A parameter or output value; a file as its name, size and download link."""
    if isinstance(value, dict) and set(value) == {"name", "size", "url"}:
        size = "" if value["size"] is None else f" ({value['size']} bytes)"
        link = f" {base_url}{value['url']}" if value["url"] else ""
        return f"{value['name']}{size}{link}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "; ".join(shown_value(v, base_url) for v in value)
    return json.dumps(value) if not isinstance(value, str) else value


@run_app.command("status")
def status(run_id: RunArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """A run's state, times, progress, outputs and steps (in start order)."""
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        steps = [] if as_json else run.steps()
    data = run.data
    if as_json:
        out.print_json(data=data)
        return
    progress = data["progress"]
    out.print(f"run [bold]{data['id']}[/] ({data['workflow']}): {styled(data['state'])}")
    if data.get("waiting"):
        out.print(f"waiting: {escape(data['waiting'])}")
    out.print(
        f"steps: {progress['done']}/{progress['total']} done"
        + (f"; running: {', '.join(data['current_steps'])}" if data["current_steps"] else "")
    )
    out.print(f"running time: {data['running_s']:.1f}s (paused {data['paused_s']:.1f}s)")
    if data.get("keep"):
        out.print("kept: exempt from retention")
    if data.get("files_purged_at"):
        out.print(f"files removed by retention at {data['files_purged_at'][:19]}")
    if data["error"]:
        out.print(f"[red]error[/]: {escape(str(data['error']))}")
    params = data["params"]
    if data.get("cwl_job") is not None:  # a CWL run given its job document: shown as sent
        out.print("CWL job document (as sent):")
        out.print(json.dumps(data["cwl_job"], indent=2), markup=False, highlight=False)
        params = {k: v for k, v in params.items() if k not in ("cwl_job", "cwl_request")}
    for title, values in (("params", params), ("outputs", data["outputs"])):
        if values:
            out.print(f"{title}:")
            for name, value in values.items():
                out.print(f"  {name}: {shown_value(value, run.client.base_url)}", markup=False)
    if steps:
        out.print(step_table(steps))


def when(text: str | None, option: str) -> datetime | None:
    """An ISO date or time (UTC unless it says otherwise), or an age: ``90s``, ``15m``,
    ``1h``, ``2d``, ``1w`` ago."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
        return clock.now() - timedelta(seconds=int(match[1]) * unit)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{option}: {text!r} is neither a time (2026-01-31, 2026-01-31T08:00) nor an age (1h)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@run_app.command("list")
def list_runs(
    state: Annotated[
        list[str] | None, typer.Option("--state", help="A state or a,b (repeatable).")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only runs with this tag.")] = None,
    owner: Annotated[str | None, typer.Option(help="Admins: only this user's.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Created at or after: a time (UTC) or an age (1h, 2d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before: a time (UTC) or an age (1h, 2d).")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="Text in the run id, the workflow or a tag.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your runs (admins: everyone's), newest first."""
    after, before = when(since, "--since"), when(until, "--until")
    with reported(), client_for(server) as client:
        runs = client.runs(
            state=state,
            workflow=workflow,
            tag=tag,
            owner=owner,
            limit=limit,
            search=search,
            created_after=after,
            created_before=before,
        )
    if as_json:
        out.print_json(data=[r.data for r in runs])
        return
    table = Table("id", "workflow", "state", "created", "tags")
    for r in runs:
        d = r.data
        shown = styled(d["state"]) + (f" ({escape(d['waiting'])})" if d.get("waiting") else "")
        table.add_row(d["id"], d["workflow"], shown, d["created_at"][:19], ",".join(d["tags"]))
    out.print(table)


def _act(server: str | None, run_id: str, as_json: bool, verb: str, action: str, **kw: Any) -> None:
    with reported(), client_for(server) as client:
        run = _run(client, run_id)
        getattr(run, action)(**kw)
    _print_run(run, as_json, verb)


class PauseMode(StrEnum):
    freeze = "freeze"
    drain = "drain"


@run_app.command("pause")
def pause(
    run_id: RunArg,
    mode: Annotated[
        PauseMode,
        typer.Option(
            help="freeze: running steps are stopped where they are (SIGSTOP); "
            "drain: they run to their end and no new step starts."
        ),
    ] = PauseMode.freeze,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pause a running run: its steps frozen (default) or drained."""
    _act(server, run_id, as_json, "paused", "pause", mode=mode.value)


@run_app.command("stop")
def stop(
    run_id: RunArg,
    grace: GraceOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a run gracefully (SIGTERM, then SIGKILL after the grace period)."""
    _act(server, run_id, as_json, "stopping", "stop", grace_s=grace)


@run_app.command("resume")
def resume(run_id: RunArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Resume a paused run."""
    _act(server, run_id, as_json, "resumed", "resume")


@run_app.command("kill")
def kill(run_id: RunArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Kill a run now (SIGKILL); its work files are deleted."""
    _act(server, run_id, as_json, "killed", "kill")


@run_app.command("keep")
def keep(
    run_id: RunArg,
    off: Annotated[bool, typer.Option("--off", help="No longer exempt it.")] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Exempt a run from the server's retention (its files and record stay), or --off."""
    with reported(), client_for(server) as client:
        run = _run(client, run_id)
        run.keep(not off)
    if as_json:
        out.print_json(data=run.data)
    else:
        out.print(f"run {run.id}: " + ("kept" if run.data["keep"] else "not kept"))


@run_app.command("products")
def products(run_id: RunArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """The files a run produced."""
    with reported(), client_for(server) as client:
        items = client.run(run_id).products()
    if as_json:
        out.print_json(data=items)
        return
    table = Table("name", "size", "sha256", "id")
    for p in items:
        table.add_row(p["name"], str(p["size"]), p["sha256"][:16], p["id"])
    out.print(table)


@run_app.command("download")
def download(
    run_id: RunArg,
    product: Annotated[
        str | None, typer.Argument(help="A product's name or id; all of them (zip) if omitted.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="A file, or a directory to save into.")
    ] = Path("."),
    server: ServerOption = None,
) -> None:
    """Download one product, or every product as a zip."""
    if not output.parent.exists():
        fail(f"no such directory: {output.parent}")
    with reported(), client_for(server) as client:
        run = _run(client, run_id)
        saved = run.download(product, output) if product else run.download_all(output)
    out.print(f"saved {saved}")


run_app.command("watch")(watch)
run_app.command("logs")(logs)
