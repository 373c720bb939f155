"""``flowdeck secret set|list|delete``: your secrets; a value is read from standard input
(or asked for on a terminal), never taken as an argument (shell history, ``ps``)."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.table import Table

from flowdeck.cli.common import fail, out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.session import ServerOption, client_for

secret_app = group_app("secret")

NameArg = Annotated[str, typer.Argument(help="The secret's name (letters, digits, _).")]
OwnerOption = Annotated[str | None, typer.Option("--owner", help="Admins: another user's secrets.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def read_value(raw: bool) -> str:
    """The value: all of standard input (one final newline dropped unless ``raw``), or
    typed without echo on a terminal."""
    if sys.stdin.isatty():
        value = getpass.getpass("Value: ")
    else:
        value = sys.stdin.read()
        if not raw and value.endswith("\n"):
            value = value[:-2] if value.endswith("\r\n") else value[:-1]
    if not value:
        fail("no value on standard input")
    return value


@secret_app.command("set")
def set_secret(
    name: NameArg,
    raw: Annotated[
        bool, typer.Option("--raw", help="Keep standard input exactly (its last newline too).")
    ] = False,
    server: ServerOption = None,
) -> None:
    """Create or replace a secret; its value is read from standard input."""
    value = read_value(raw)
    with reported(), client_for(server) as client:
        client.set_secret(name, value)
    out.print(f"secret {name} set")


@secret_app.command("list")
def list_secrets(
    owner: OwnerOption = None, server: ServerOption = None, as_json: JsonOption = False
) -> None:
    """Your secrets' names and dates (never their values)."""
    with reported(), client_for(server) as client:
        found = client.secrets(owner)
    if as_json:
        out.print_json(data=found)
        return
    table = Table("name", "owner", "created", "updated")
    for s in found:
        table.add_row(s["name"], s["owner"], s["created_at"], s["updated_at"])
    out.print(table)


@secret_app.command("delete")
def delete_secret(name: NameArg, owner: OwnerOption = None, server: ServerOption = None) -> None:
    """Delete a secret (admins: ``--owner``'s too)."""
    with reported(), client_for(server) as client:
        client.delete_secret(name, owner)
    out.print(f"secret {name} deleted")
