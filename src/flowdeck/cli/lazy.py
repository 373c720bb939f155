"""The commands of ``flowdeck``, each imported only when it is used.

Building a command (typer reads every function's parameters) and importing its module
cost time at every start-up; ``serve``, ``db`` and ``admin`` moreover need the server's
stack (settings, the store, the services, FastAPI), which the client commands never do.
``flowdeck --help`` lists the commands from :data:`COMMANDS` without importing them;
``flowdeck run …`` builds the ``run`` commands alone.  A unit test checks what ``import
flowdeck.cli.main`` imports; ``python -m bench.cli`` measures the start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# name: (module, its typer.Typer, the help shown before it is loaded); in the help's order
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("flowdeck.cli.serve", "serve_app", "Start the flowdeck server."),
    "db": ("flowdeck.cli.admin", "db_app", "Database schema."),
    "admin": (
        "flowdeck.cli.admin",
        "admin_app",
        "Administer accounts and see the status (on the server's machine).",
    ),
    "workflow": (
        "flowdeck.cli.workflows",
        "workflow_app",
        "Workflows: push, list, show, validate.",
    ),
    # cli.streams adds push-input, read-output and rerun to cli.runs' run_app
    "run": ("flowdeck.cli.streams", "run_app", "Runs: create, stage, start, watch, control."),
    "events": ("flowdeck.cli.events", "events_app", "Events of your runs."),
    "webhook": (
        "flowdeck.cli.webhooks",
        "webhook_app",
        "Webhooks: POST your runs' events to a URL (docs/webhooks.md).",
    ),
    "graph": ("flowdeck.cli.graphs", "graph_app", "Run graphs: runs of workflows wired together."),
    "secret": (
        "flowdeck.cli.secrets",
        "secret_app",
        "Your secrets, which your runs' steps get (values from stdin, write-only).",
    ),
    "token": (
        "flowdeck.cli.tokens",
        "token_app",
        "API tokens for scripts: create (the secret is shown once), list, revoke.",
    ),
    "cwl-runner": (
        "flowdeck.cli.cwl_runner",
        "cwl_runner_app",
        "Run a CWL document on a flowdeck server as cwltool would (outputs into --outdir).",
    ),
}
SINGLE = ("serve", "cwl-runner")  # commands, not groups of commands
# where the commands defined in cli.main (login, logout, whoami) go among them
ORDER = ["serve", "db", "admin", "login", "logout", "whoami", *list(COMMANDS)[3:]]


def help_of(name: str) -> str:
    """The help of command ``name`` (its module's typer.Typer uses it too)."""
    return COMMANDS[name][2]


class LazyCommand(TyperCommand):
    """Stands for a command in listings; parsing its arguments loads the real one (its
    options, its help, its sub-commands), which then runs."""

    def __init__(self, name: str, module: str, attribute: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = (module, attribute)
        self.loaded: Any = None

    def real(self) -> Any:
        if self.loaded is None:
            module, attribute = self.target
            app = getattr(import_module(module), attribute)
            # a sub-app is a group even with one command (`db upgrade`, `events tail`), as
            # add_typer makes it; `serve` and `cwl-runner` are single commands
            build = typer.main.get_command if self.name in SINGLE else typer.main.get_group
            self.loaded = build(app)
            self.loaded.name = self.name
        return self.loaded

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        return self.real().invoke(ctx)


class LazyGroup(TyperGroup):
    """The root command: the commands of :data:`COMMANDS` are loaded when used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        defined: dict[str, Any] = dict(self.commands)
        for name, target in COMMANDS.items():
            defined.setdefault(name, LazyCommand(name, *target))
        self.commands = {name: defined.pop(name) for name in ORDER if name in defined}
        self.commands.update(defined)
