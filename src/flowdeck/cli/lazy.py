"""The commands of ``flowdeck``, each imported only when it is used.

Building a command (typer reads every function's parameters) and importing its module
cost time at every start-up; ``serve``, ``db`` and ``admin`` moreover need the server's
stack (settings, the store, the services, FastAPI), which the client commands never do.
``flowdeck --help`` lists the commands from :data:`COMMANDS` without importing them;
``flowdeck run …`` builds the ``run`` commands alone.  A unit test checks what ``import
flowdeck.cli.main`` imports; ``python -m bench.cli`` measures the start-up.
"""

from __future__ import annotations

import copy
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


def plain_app(**options: Any) -> typer.Typer:
    """A typer.Typer whose help and usage errors are plain text, in click's format.  typer's
    rich help imports rich's markdown, traceback and panel modules: about 80 ms more at
    each ``--help`` and each usage error (``python -m bench.cli``)."""
    return typer.Typer(rich_markup_mode=None, **options)


def group_app(name: str) -> typer.Typer:
    """The typer.Typer of the command group ``name`` of :data:`COMMANDS`."""
    return plain_app(help=help_of(name), no_args_is_help=True)


class LazyCommand(TyperCommand):
    """Stands for a command in listings; parsing its arguments loads the real one (its
    options, its help, its sub-commands), which then runs."""

    def __init__(self, name: str, module: str, attribute: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = (module, attribute)
        self.loaded: Any = None

    def real(self, args: list[str] | None = None) -> Any:
        """The real command.  For a group, when ``args`` start with the name of one of its
        commands, the group with that command alone (`run list` builds `list`, not the 19
        `run` commands: typer reads each command's parameters, about 1 ms a command)."""
        if self.loaded is None:
            module, attribute = self.target
            app = getattr(import_module(module), attribute)
            # a sub-app is a group even with one command (`db upgrade`, `events tail`), as
            # add_typer makes it; `serve` and `cwl-runner` are single commands
            if self.name in SINGLE:
                self.loaded = typer.main.get_command(app)
            else:
                self.loaded = typer.main.get_group(only(app, args[0]) if args else app)
            self.loaded.name = self.name
        return self.loaded

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        return self.real(args).make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        return self.real().invoke(ctx)


def only(app: typer.Typer, name: str) -> typer.Typer:
    """``app`` with its command or sub-group ``name`` alone; ``app`` itself if it has none of
    that name (``--help``, a mistyped name: click then lists or suggests them all)."""
    commands = [
        info
        for info in app.registered_commands
        if (info.name or typer.main.get_command_name(getattr(info.callback, "__name__", "")))
        == name
    ]
    groups = [info for info in app.registered_groups if info.name == name]
    if not commands and not groups:
        return app
    alone = copy.copy(app)
    alone.registered_commands, alone.registered_groups = commands, groups
    return alone


class LazyGroup(TyperGroup):
    """The root command: the commands of :data:`COMMANDS` are loaded when used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        defined: dict[str, Any] = dict(self.commands)
        for name, target in COMMANDS.items():
            defined.setdefault(name, LazyCommand(name, *target))
        self.commands = {name: defined.pop(name) for name in ORDER if name in defined}
        self.commands.update(defined)
