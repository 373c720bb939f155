"""``flowdeck login|logout|whoami``: the user's session with a server, over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flowdeck.cli import credentials
from flowdeck.cli.common import fail, out, read_password, reported

if TYPE_CHECKING:
    from flowdeck.client import Client

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Server URL (env FLOWDECK_URL; default: the last one used)"),
]


def client_for(server: str | None, *, need_token: bool = True) -> Client:
    url = credentials.resolve_server(server)
    token = credentials.saved_token(url)
    if need_token and token is None:
        fail(f"not logged in to {url}: run 'flowdeck login --server {url}'")
    from flowdeck.client import Client  # when a command runs: `--help` needs no SDK

    return Client(url, token)


def login(
    username: Annotated[str | None, typer.Option("--username", "-u", help="Username.")] = None,
    server: ServerOption = None,
) -> None:
    """Log in and save the token for later commands (in your config directory, mode 0600)."""
    client = client_for(server, need_token=False)
    if username is None:
        username = typer.prompt("Username")
    password = read_password()
    with reported(), client:
        result = client.login(username, password)
    credentials.save_token(client.base_url, username, result["token"], result["expires_at"])
    out.print(
        f"logged in to {client.base_url} as {result['user']['username']} "
        f"(until {result['expires_at']})"
    )


def logout(server: ServerOption = None) -> None:
    """End the session on the server and forget the saved token."""
    from flowdeck.client import AuthenticationError

    client = client_for(server)
    with client:
        try:
            client.logout()
        except AuthenticationError:
            pass  # already ended on the server: forgetting it locally is what is left
        except Exception as exc:
            with reported():
                raise exc
    credentials.forget(client.base_url)
    out.print(f"logged out of {client.base_url}")


def whoami(
    server: ServerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the account you are logged in as."""
    client = client_for(server)
    with reported(), client:
        me = client.me()
    if as_json:
        out.print_json(data=me)
    else:
        out.print(f"{me['username']} ({me['role']}, {me['status']}) on {client.base_url}")
        if "usage" in me:
            out.print(usage_lines(me["usage"], me["quota"]), highlight=False)


def usage_lines(usage: dict[str, float], quota: dict[str, float | None]) -> str:
    """``active runs: 1 of 4`` lines: a user's usage against their quotas."""
    from flowdeck.domain.quotas import human_bytes

    def of(value: float | None, size: bool = False) -> str:
        if value is None:
            return "no limit"
        return human_bytes(value) if size else f"{value:g}"

    return "\n".join(
        [
            f"active runs: {usage['active_runs']} of {of(quota['max_active_runs'])}"
            f" ({usage['queued_runs']} queued)",
            f"CPU slots in use: {usage.get('cpus', 0):g} of {of(quota['max_cpus'])}",
            f"stored: {human_bytes(usage['stored_bytes'])} of "
            f"{of(quota['max_stored_bytes'], size=True)}",
        ]
    )
