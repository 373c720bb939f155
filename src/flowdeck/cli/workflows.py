"""``flowdeck workflow push|list|show|validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.syntax import Syntax
from rich.table import Table

from flowdeck.cli.common import fail, out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.session import ServerOption, client_for

workflow_app = group_app("workflow")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SPEC_NAMES = ("flowdeck.yaml", "flowdeck.yml", "flowdeck.json", "workflow.yaml", "workflow.yml")


@workflow_app.command("push")
def push(
    path: Annotated[
        Path, typer.Argument(help="A spec or .cwl file, a .zip/.tar.gz, or a directory.")
    ],
    visibility: Annotated[
        str, typer.Option(help="private, shared or public.", case_sensitive=False)
    ] = "private",
    workflow_type: Annotated[
        str,
        typer.Option("--type", help="auto (CWL recognised by its content), flowdeck or cwl."),
    ] = "auto",
    main: Annotated[
        str | None, typer.Option("--main", help="CWL archive or directory: the file to run.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="CWL: the workflow name (default: the file's).")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="CWL: the version (default: from the content hash)."),
    ] = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store a workflow version: a flowdeck spec, a CWL document, or an archive or
    directory of either (a directory is sent as a .tar.gz archive)."""
    with reported(), client_for(server) as client:
        wf = client.push_workflow(
            path,
            visibility=visibility,
            workflow_type=workflow_type,
            main=main,
            name=name,
            version=version,
        )
    if as_json:
        out.print_json(data=wf)
    else:
        out.print(f"pushed {wf['ref']} ({wf['visibility']}, {wf['content_hash'][:12]})")


@workflow_app.command("list")
def list_workflows(
    name: Annotated[str | None, typer.Option(help="Only this name.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Workflows you can see, newest first."""
    with reported(), client_for(server) as client:
        items = client.workflows(name=name, owner=owner, limit=limit)
    if as_json:
        out.print_json(data=items)
        return
    table = Table("workflow", "visibility", "created", "description")
    for w in items:
        table.add_row(w["ref"], w["visibility"], w["created_at"][:16], w["description"])
    out.print(table)


@workflow_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="name@version, owner/name@version or name@latest")],
    source: Annotated[bool, typer.Option("--source", help="Print the document as pushed.")] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """One workflow version: its inputs, outputs and steps."""
    with reported(), client_for(server) as client:
        wf = client.workflow(ref)
    if as_json:
        out.print_json(data=wf)
        return
    if source:
        out.print(Syntax(wf["source"], "yaml"))
        return
    spec: dict[str, Any] = wf["spec"]
    out.print(f"[bold]{wf['ref']}[/]  {wf['visibility']}  {wf['description']}")
    inputs = Table("input", "type", "default", "description", title="inputs")
    for name, inp in (spec.get("inputs") or {}).items():
        default = inp.get("default")
        inputs.add_row(
            name, inp["type"], "" if default is None else str(default), inp.get("description", "")
        )
    out.print(inputs)
    steps = Table("step", "kind", "needs", title="steps")
    for name, step in spec["steps"].items():
        kind = next((k for k in ("run", "python", "uses") if step.get(k)), "?")
        steps.add_row(name, kind, ", ".join(step.get("needs") or []))
    out.print(steps)


def _spec_file(path: Path) -> Path:
    if path.is_dir():
        for name in SPEC_NAMES:
            if (path / name).is_file():
                return path / name
        fail(f"{path}: no {' or '.join(SPEC_NAMES[:3])} in this directory")
    if not path.is_file():
        fail(f"no such file: {path}")
    return path


@workflow_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="A spec file or a workflow directory.")],
    as_json: JsonOption = False,
) -> None:
    """Check a workflow offline (no server): every problem with its line:column.  Exit
    code 1 if it has problems."""
    from flowdeck.domain.validation import validate_file

    spec = _spec_file(path)
    with reported():
        report = validate_file(spec)
    if as_json:
        wf = report.workflow
        out.print_json(
            data={
                "valid": report.ok,
                "errors": [p.as_dict() for p in report.problems],
                "name": wf.spec.name if wf and report.ok else None,
                "version": wf.spec.version if wf and report.ok else None,
            }
        )
    elif report.ok:
        out.print(f"{spec}: valid")
    else:
        for problem in report.problems:
            out.print(f"{spec}:{problem}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
