"""``flowdeck token create|list|revoke``: named API tokens for scripts (their secret is
shown once, when created) and the sessions of your account."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flowdeck.cli.common import out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.session import ServerOption, client_for

token_app = group_app("token")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to recognise it by.")],
    days: Annotated[
        int, typer.Option("--days", min=1, max=3650, help="Days until it expires.")
    ] = 90,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API token; its secret is printed now and never again."""
    with reported(), client_for(server) as client:
        made = client.create_token(name, days)
    if as_json:
        out.print_json(data=made)
        return
    out.print(f"token [bold]{made['id']}[/] ({name}), expires {made['expires_at'][:19]}")
    out.print("Its secret (shown only now):")
    out.print(made["token"], markup=False, highlight=False, soft_wrap=True)


@token_app.command("list")
def list_tokens(server: ServerOption = None, as_json: JsonOption = False) -> None:
    """Your sessions and API tokens, newest first (never their secrets)."""
    with reported(), client_for(server) as client:
        found = client.tokens()
    if as_json:
        out.print_json(data=found)
        return
    table = Table("id", "kind", "name", "prefix", "created", "expires", "last used", "revoked")
    for t in found:
        table.add_row(
            t["id"],
            t["kind"],
            t["name"] or "",
            t["prefix"],
            t["created_at"][:19],
            t["expires_at"][:19],
            (t["last_used_at"] or "")[:19],
            (t["revoked_at"] or "")[:19],
        )
    out.print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (token list).")],
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """End a token of yours at once."""
    with reported(), client_for(server) as client:
        client.revoke_token(token_id)
    if as_json:
        out.print_json(data={"id": token_id, "revoked": True})
        return
    out.print(f"token {token_id} revoked")
