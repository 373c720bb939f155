"""``flowdeck run push-input|read-output|rerun``: stream ports and reruns (added to the
``run`` sub-app of :mod:`flowdeck.cli.runs` at the end)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from flowdeck.cli.common import fail, out, reported
from flowdeck.cli.runs import run_app, styled
from flowdeck.cli.session import ServerOption, client_for
from flowdeck.cli.watch import watch_run

RunArg = Annotated[str, typer.Argument(help="The run's id.")]
PortArg = Annotated[str, typer.Argument(help="The stream port's name.")]
BATCH_RECORDS = 500  # records sent per push when reading NDJSON from a file or stdin


def _batches(lines: list[bytes] | None, source: str) -> list[bytes]:
    """NDJSON lines grouped into bodies of BATCH_RECORDS; each line checked here so that
    an error names the line of the file (the server names it within one push)."""
    bodies: list[bytes] = []
    batch: list[bytes] = []
    for number, line in enumerate(lines or [], start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError as exc:
            fail(f"{source}:{number}: not a JSON record: {exc}")
        batch.append(line.rstrip(b"\r\n") + b"\n")
        if len(batch) == BATCH_RECORDS:
            bodies.append(b"".join(batch))
            batch = []
    if batch:
        bodies.append(b"".join(batch))
    return bodies


def push_input(
    run_id: RunArg,
    port: PortArg,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="NDJSON records (one JSON value a line); - for stdin."),
    ] = None,
    close: Annotated[bool, typer.Option("--close", help="Then close the input.")] = False,
    server: ServerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Push records into a stream input of a run (and/or close it with --close)."""
    if file is None and not close:
        fail("nothing to do: give --file PATH (or - for stdin), --close, or both")
    lines: list[bytes] | None = None
    source = "stdin" if file == "-" else str(file)
    if file == "-":
        lines = sys.stdin.buffer.readlines()
    elif file is not None:
        try:
            lines = Path(file).read_bytes().splitlines()
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}")
    bodies = _batches(lines, source)
    result: dict[str, object] = {"port": port}
    with reported(), client_for(server) as client:
        writer = client.run(run_id).input(port)
        for body in bodies:
            result.update(writer.write_ndjson(body))
        if close:
            result.update(writer.close())
    if as_json:
        out.print_json(data=result)
        return
    pushed = sum(body.count(b"\n") for body in bodies)
    line = f"pushed {pushed} record(s) into {port}"
    if "records" in result:
        line += f" ({result['records']} in all)"
    out.print(line + ("; closed" if close else ""), highlight=False)


def read_output(
    run_id: RunArg,
    port: PortArg,
    from_: Annotated[int, typer.Option("--from", min=0, help="The first offset.")] = 0,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Wait for new records until the port is closed."),
    ] = False,
    server: ServerOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One {offset, attempt, data} object a line.")
    ] = False,
) -> None:
    """Print the records of a stream output, one JSON value a line; with --follow, as
    they come until the port is closed."""
    with reported(), client_for(server) as client:
        reader = client.run(run_id).output(port).read(from_, follow=follow, sse=follow)
        for record in reader:
            if as_json:
                body = {"offset": record.offset, "attempt": record.attempt, "data": record.data}
                typer.echo(json.dumps(body))
            else:
                typer.echo(json.dumps(record.data))


def rerun(
    run_id: RunArg,
    from_step: Annotated[
        str | None,
        typer.Option("--from-step", help="Run this step and what depends on it again."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Then follow it.")] = False,
    server: ServerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run an ended run again: same workflow version, parameters and files; unchanged
    steps are reused from the cache."""
    with reported(), client_for(server) as client:
        run = client.run(run_id).rerun(from_step=from_step)
        if watch:
            watch_run(run, as_json)
    if as_json:
        out.print_json(data=run.data)
    else:
        out.print(f"rerun of {run_id}: run [bold]{run.id}[/] {styled(run.state)}")


# the `run` command group: cli.runs' commands and these (flowdeck.cli.lazy loads it here)
run_app.command("push-input")(push_input)
run_app.command("read-output")(read_output)
run_app.command("rerun")(rerun)
