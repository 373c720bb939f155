"""``flowdeck admin quota set|show``: per-user quotas, on the store directly (run on the
server's machine, with its configuration)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from flowdeck.cli.common import ConfigOption, fail, out, reported, settings_from
from flowdeck.cli.lazy import plain_app
from flowdeck.domain.quotas import Quota, human_bytes, parse_bytes
from flowdeck.services.context import Context, build_context
from flowdeck.services.quotas import UserQuota

quota_app = plain_app(help="Per-user quotas: show and set.", no_args_is_help=True)


def _ctx(config: ConfigOption) -> Context:
    settings = settings_from(config)
    with reported():
        return build_context(settings)
    raise AssertionError("unreachable")  # pragma: no cover


def _limit(value: Any, size: bool = False) -> str:
    if value is None:
        return "no limit"
    return human_bytes(value) if size else f"{value:g}"


def _row(q: UserQuota) -> dict[str, Any]:
    return {
        "username": q.user.username,
        "quota": q.quota.as_dict(),
        "override": q.override.as_dict(),
        "usage": q.usage.as_dict(),
    }


@quota_app.command("show")
def show(
    username: Annotated[str | None, typer.Argument(help="Username (default: every user).")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show quotas (* marks an admin's override of the default) and usage."""
    ctx = _ctx(config)
    with reported():
        found = [ctx.quotas.show(None, username)] if username else ctx.quotas.list(None)
        ctx.close()
    if as_json:
        out.print_json(json.dumps([_row(q) for q in found]))
        return
    table = Table("user", "active runs", "CPU slots", "stored bytes", "queued")
    for q in found:

        def cell(name: str, used: str, size: bool = False, q: UserQuota = q) -> str:
            mark = "*" if getattr(q.override, name) is not None else ""
            return f"{used} of {_limit(getattr(q.quota, name), size)}{mark}"

        table.add_row(
            q.user.username,
            cell("max_active_runs", str(q.usage.active_runs)),
            _limit(q.quota.max_cpus) + ("*" if q.override.max_cpus is not None else ""),
            cell("max_stored_bytes", human_bytes(q.usage.stored_bytes), size=True),
            str(q.usage.queued_runs),
        )
    out.print(table)


@quota_app.command("set")
def set_(
    username: Annotated[str, typer.Argument(help="Username.")],
    max_active_runs: Annotated[
        int | None, typer.Option(min=1, help="Most running runs; more wait queued.")
    ] = None,
    max_cpus: Annotated[
        float | None, typer.Option(min=0.001, help="Most CPU slots held at once.")
    ] = None,
    max_stored_bytes: Annotated[
        str | None, typer.Option(help="Most bytes of uploads and products, e.g. 10G.")
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Back to the server's defaults (first).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Override the server's default quotas for a user (the options given; others stay)."""
    changes: dict[str, Any] = Quota().as_dict() if reset else {}
    if max_active_runs is not None:
        changes["max_active_runs"] = max_active_runs
    if max_cpus is not None:
        changes["max_cpus"] = max_cpus
    if max_stored_bytes is not None:
        try:
            changes["max_stored_bytes"] = parse_bytes(max_stored_bytes)
        except ValueError:
            fail(f"--max-stored-bytes: not a size: {max_stored_bytes!r} (e.g. 500M, 10G)")
    if not changes:
        fail("nothing to set: give --max-active-runs, --max-cpus, --max-stored-bytes or --reset")
    ctx = _ctx(config)
    with reported():
        q = ctx.quotas.set(None, username, changes)
        ctx.close()
    out.print(
        f"{q.user.username}: at most {_limit(q.quota.max_active_runs)} active runs, "
        f"{_limit(q.quota.max_cpus)} CPU slots, "
        f"{_limit(q.quota.max_stored_bytes, size=True)} stored"
    )
