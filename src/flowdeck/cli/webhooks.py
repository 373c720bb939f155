"""``flowdeck webhook add|list|show|enable|disable|delete|rotate|deliveries|redeliver``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flowdeck.cli.common import out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.session import ServerOption, client_for

webhook_app = group_app("webhook")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
HookArg = Annotated[str, typer.Argument(help="The subscription's id.")]
LimitOption = Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")]


def _print_hook(hook: dict[str, Any]) -> None:
    state = (
        "enabled" if hook["enabled"] else f"disabled ({hook.get('disabled_reason') or 'by you'})"
    )
    scope = f"run {hook['run_id']}" if hook.get("run_id") else "all your runs"
    out.print(f"[bold]{hook['id']}[/] {hook['url']}", highlight=False)
    out.print(f"  events: {', '.join(hook['events'])}; {scope}; {state}", highlight=False)


def _print_secret(hook: dict[str, Any]) -> None:
    out.print(f"  secret: {hook['secret']}", highlight=False)
    out.print("  (shown only now: keep it to verify the signatures)", style="dim")


@webhook_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="The http(s) URL that receives the events.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="A type pattern: run.*, step.failed, * (repeatable)."),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's events.")] = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Subscribe a URL; prints the secret, shown only this once."""
    with reported(), client_for(server) as client:
        hook = client.add_webhook(url, event or ["*"], run)
    if as_json:
        out.print_json(data=hook)
        return
    _print_hook(hook)
    _print_secret(hook)


@webhook_app.command("list")
def list_hooks(
    limit: LimitOption = 100, server: ServerOption = None, as_json: JsonOption = False
) -> None:
    """Your subscriptions, newest first."""
    with reported(), client_for(server) as client:
        hooks = client.webhooks(limit=limit)
    if as_json:
        out.print_json(data=hooks)
        return
    table = Table("id", "url", "events", "run", "enabled")
    for h in hooks:
        table.add_row(
            h["id"], h["url"], ", ".join(h["events"]), h.get("run_id") or "all", str(h["enabled"])
        )
    out.print(table)


@webhook_app.command("show")
def show(webhook_id: HookArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """One subscription."""
    with reported(), client_for(server) as client:
        hook = client.webhook(webhook_id)
    if as_json:
        out.print_json(data=hook)
    else:
        _print_hook(hook)


def _toggle(enabled: bool) -> None:
    verb = "enable" if enabled else "disable"

    def command(
        webhook_id: HookArg, server: ServerOption = None, as_json: JsonOption = False
    ) -> None:
        with reported(), client_for(server) as client:
            hook = client.update_webhook(webhook_id, enabled=enabled)
        if as_json:
            out.print_json(data=hook)
        else:
            _print_hook(hook)

    command.__doc__ = (
        "Enable the subscription again (pending deliveries go out)."
        if enabled
        else "Disable the subscription (deliveries wait)."
    )
    webhook_app.command(verb)(command)


_toggle(True)
_toggle(False)


@webhook_app.command("delete")
def delete(webhook_id: HookArg, server: ServerOption = None) -> None:
    """Delete the subscription with its pending deliveries and delivery log."""
    with reported(), client_for(server) as client:
        client.delete_webhook(webhook_id)
    out.print(f"deleted {webhook_id}")


@webhook_app.command("rotate")
def rotate(webhook_id: HookArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """A new secret; the previous one keeps signing for a while (webhook_secret_overlap_s)."""
    with reported(), client_for(server) as client:
        hook = client.rotate_webhook_secret(webhook_id)
    if as_json:
        out.print_json(data=hook)
        return
    _print_hook(hook)
    _print_secret(hook)


@webhook_app.command("deliveries")
def deliveries(
    webhook_id: HookArg,
    limit: LimitOption = 20,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """The subscription's deliveries, newest first, with their attempts."""
    with reported(), client_for(server) as client:
        items = client.deliveries(webhook_id, limit=limit)
    if as_json:
        out.print_json(data=items)
        return
    table = Table("delivery", "event", "state", "attempts", "last answer", "created")
    for d in items:
        last = d.get("last_error") or (str(d["last_status"]) if d.get("last_status") else "")
        table.add_row(
            d["id"], d["type"], d["state"], str(len(d["attempts"])), last, d["created_at"][:19]
        )
    out.print(table)


@webhook_app.command("redeliver")
def redeliver(
    webhook_id: HookArg,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id.")],
    server: ServerOption = None,
) -> None:
    """Send a delivery again soon (same webhook-id; its retries start over)."""
    with reported(), client_for(server) as client:
        client.redeliver(webhook_id, delivery_id)
    out.print(f"delivery {delivery_id} will be sent again")
