"""Entry point of the ``flowdeck`` command.  It imports typer, rich and the session
commands only: every other command is imported and built when it is used
(:mod:`flowdeck.cli.lazy`), and the SDK when a command talks to a server."""

from __future__ import annotations

import sys

import typer

from flowdeck import __version__
from flowdeck.cli import session
from flowdeck.cli.lazy import LazyGroup, plain_app

app = plain_app(
    name="flowdeck",
    help="flowdeck: a workflow job manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=LazyGroup,  # serve, db, admin, workflow, run, events, webhook, graph
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


app.command("login")(session.login)
app.command("logout")(session.logout)
app.command("whoami")(session.whoami)


def main() -> None:
    # httpx imports its own command line (click, pygments: ~20 ms) unless that fails, when
    # it keeps a stub; flowdeck's command line never runs httpx's.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    app()
