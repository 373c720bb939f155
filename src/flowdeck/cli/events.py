"""``flowdeck events tail``: the live stream of your runs' events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flowdeck.cli.common import out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.session import ServerOption, client_for

events_app = group_app("events")


@events_app.command("tail")
def tail(
    run: Annotated[
        list[str] | None, typer.Option("--run", help="Only this run (repeatable).")
    ] = None,
    type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Type pattern, e.g. 'run.*' or '*.failed' (repeatable)."),
    ] = None,
    after: Annotated[
        int | None, typer.Option(help="Start after this event id (else: now).")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after this many events.")
    ] = None,
    server: ServerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Follow events as they happen (reconnecting by itself) until interrupted."""
    seen = 0
    with reported(), client_for(server) as client:
        for e in client.events(runs=run, types=type, after=after):
            if as_json:
                payload = {
                    "id": e.id,
                    "run_id": e.run_id,
                    "seq": e.seq,
                    "type": e.type,
                    "at": e.at,
                    "actor": e.actor,
                    "data": e.data,
                }
                typer.echo(json.dumps(payload))
            else:
                who = f" by {e.actor}" if e.actor else ""
                detail = " ".join(f"{k}={v}" for k, v in e.data.items())
                out.print(f"{e.at[:23]} {e.run_id} {e.type}{who} {detail}", highlight=False)
            seen += 1
            if count is not None and seen >= count:
                return
