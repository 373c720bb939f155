"""Entry point of the ``flowdeck`` command."""

from __future__ import annotations

import typer

from flowdeck import __version__
from flowdeck.cli import session
from flowdeck.cli.admin import admin_app, db_app
from flowdeck.cli.events import events_app
from flowdeck.cli.graphs import graph_app
from flowdeck.cli.runs import run_app
from flowdeck.cli.serve import build_serve_command
from flowdeck.cli.streams import push_input, read_output, rerun
from flowdeck.cli.webhooks import webhook_app
from flowdeck.cli.workflows import workflow_app

app = typer.Typer(
    name="flowdeck",
    help="flowdeck: a workflow job manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowdeck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """flowdeck: a workflow job manager."""


app.command("serve")(build_serve_command())
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.command("login")(session.login)
app.command("logout")(session.logout)
app.command("whoami")(session.whoami)
app.add_typer(workflow_app, name="workflow")
app.add_typer(run_app, name="run")
app.add_typer(events_app, name="events")
app.add_typer(webhook_app, name="webhook")
app.add_typer(graph_app, name="graph")
run_app.command("push-input")(push_input)
run_app.command("read-output")(read_output)
run_app.command("rerun")(rerun)


def main() -> None:
    app()
