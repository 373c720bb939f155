"""``flowdeck db …`` and ``flowdeck admin …``: operator commands that work on the store
directly (run them on the server's machine, with its configuration)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flowdeck.cli.common import (
    EXIT_ERROR,
    ConfigOption,
    err,
    out,
    read_password,
    reported,
    settings_from,
)
from flowdeck.cli.lazy import group_app
from flowdeck.cli.quota import quota_app
from flowdeck.cli.status import status as status_command
from flowdeck.domain.accounts import Role
from flowdeck.errors import FlowdeckError
from flowdeck.services.context import Context, build_context

# loaded by flowdeck.cli.lazy when `db` or `admin` is used
db_app = group_app("db")
admin_app = group_app("admin")

UserArg = Annotated[str, typer.Argument(help="Username.")]


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Upgrade the database schema to the latest version."""
    from flowdeck.store.migrate import upgrade
    from flowdeck.store.sql import SqlStore

    settings = settings_from(config)
    with reported():
        ctx = build_context(settings, migrate=False)
        assert isinstance(ctx.store, SqlStore)
        before, after = upgrade(ctx.store.engine)
        ctx.close()
    if before == after:
        out.print(f"database schema already at {after}")
    else:
        out.print(f"database schema upgraded from {before or 'empty'} to {after}")


def _ctx(config: ConfigOption) -> Context:
    settings = settings_from(config)
    with reported():
        return build_context(settings)
    raise AssertionError("unreachable")  # pragma: no cover


@admin_app.command("create-user")
def create_user(
    username: UserArg,
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create an active account; asks for the password (or reads it from stdin)."""
    ctx = _ctx(config)
    with reported():
        password = read_password(confirm=True)
        user = ctx.accounts.create_user(username, password, admin=admin)
    out.print(f"created {user.role.value} {user.username!r} ({user.id})")


@admin_app.command("list-users")
def list_users(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every account."""
    ctx = _ctx(config)
    with reported():
        users = ctx.accounts.list_users(None)
    if as_json:
        rows = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role.value,
                "status": u.status.value,
                "created_at": u.created_at.isoformat(),
            }
            for u in users
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("username", "role", "status", "created", "id")
    for u in users:
        table.add_row(
            u.username, u.role.value, u.status.value, f"{u.created_at:%Y-%m-%d %H:%M}", u.id
        )
    out.print(table)


def _status(action: str, help_text: str) -> None:
    def command(username: UserArg, config: ConfigOption = None) -> None:
        ctx = _ctx(config)
        with reported():
            user = ctx.accounts.set_status(None, username, action)
        out.print(f"{user.username}: {user.status.value}")

    command.__doc__ = help_text
    admin_app.command(action)(command)


_status("approve", "Approve a pending account.")
_status("disable", "Disable an account; its sessions end at once (its runs go on).")
_status("enable", "Enable a disabled account again.")


def _role(action: str, role: Role, help_text: str) -> None:
    def command(username: UserArg, config: ConfigOption = None) -> None:
        ctx = _ctx(config)
        with reported():
            user = ctx.accounts.set_role(None, username, role)
        out.print(f"{user.username}: {user.role.value}")

    command.__doc__ = help_text
    admin_app.command(action)(command)


_role("promote", Role.ADMIN, "Give an account the admin role.")
_role("demote", Role.USER, "Take the admin role away.")


@admin_app.command("reset-password")
def reset_password(username: UserArg, config: ConfigOption = None) -> None:
    """Set a new password (asked for, or read from stdin); every session ends."""
    ctx = _ctx(config)
    with reported():
        password = read_password("New password", confirm=True)
        ctx.accounts.reset_password(None, username, password)
    out.print(f"{username}: password reset, sessions ended")


@admin_app.command("delete-user")
def delete_user(
    username: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete an account (its audit entries stay)."""
    if not yes:
        typer.confirm(f"Delete user {username!r}?", abort=True)
    ctx = _ctx(config)
    with reported():
        ctx.accounts.delete_user(None, username)
    out.print(f"deleted {username}")


@admin_app.command("purge")
def purge(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="Ended runs to delete (any user's).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what retention would delete now; change nothing."),
    ] = False,
    expired: Annotated[
        bool, typer.Option("--expired", help="Delete now what retention lets go.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete ended runs of any user, their files first: it frees space on a full disk
    (the database then has room to forget them).  Exit code 1 if any could not be.  With
    --dry-run or --expired: what the retention settings let go (docs/operations.md)."""
    if dry_run or expired:
        if run_ids or (dry_run and expired):
            err.print("[bold red]error:[/] give run ids, --dry-run or --expired (one of them)")
            raise typer.Exit(EXIT_ERROR)
        _retention(config, dry_run=dry_run, as_json=as_json)
        return
    if not run_ids:
        err.print("[bold red]error:[/] give run ids, --dry-run or --expired")
        raise typer.Exit(EXIT_ERROR)
    if not yes:
        typer.confirm(f"Delete {len(run_ids)} run(s) and their files?", abort=True)
    ctx = _ctx(config)
    failed = 0
    for run_id in run_ids:
        try:
            ctx.runs.delete(None, run_id)
        except FlowdeckError as exc:
            failed += 1
            err.print(f"[bold red]error:[/] {run_id}: {exc.message}", highlight=False)
        else:
            out.print(f"purged {run_id}")
    ctx.close()
    if failed:
        raise typer.Exit(EXIT_ERROR)


def _retention(config: ConfigOption, *, dry_run: bool, as_json: bool) -> None:
    ctx = _ctx(config)
    with reported():
        if not ctx.retention.enabled:
            out.print("no retention setting is set: nothing expires (docs/operations.md)")
            ctx.close()
            return
        report = ctx.retention.plan() if dry_run else ctx.retention.purge()
        ctx.close()
    if report is None:
        err.print("[bold red]error:[/] another server of this database is purging now")
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        out.print_json(data=dataclasses.asdict(report))
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(
        f"{verb}: {report.runs} run(s), the folders of {report.run_folders} more "
        f"({report.bytes} bytes), {report.events} event(s), {report.deliveries} webhook "
        f"deliveries, {report.audit} audit entries"
    )
    if report.sample:
        out.print("runs: " + " ".join(report.sample), highlight=False)


@admin_app.command("audit")
def audit(
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many entries.")] = 50,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. login.failed.")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the audit log, newest first."""
    ctx = _ctx(config)
    with reported():
        entries = ctx.accounts.audit(None, limit=limit, action=action)
    if as_json:
        rows = [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor": e.actor_name,
                "action": e.action,
                "target": e.target,
                "address": e.address,
                "details": e.details,
            }
            for e in entries
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "when", "who", "action", "target", "from")
    for e in entries:
        table.add_row(
            str(e.id),
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.actor_name or "-",
            e.action,
            e.target or "-",
            e.address or "-",
        )
    out.print(table)


admin_app.command("status")(status_command)
admin_app.add_typer(quota_app, name="quota")


@admin_app.command("rotate-secrets")
def rotate_secrets(config: ConfigOption = None) -> None:
    """Re-encrypt every stored secret with the first key of secret_key_file.  To rotate
    the key: add a new first line to the file, run this, then drop the old line."""
    ctx = _ctx(config)
    with reported():
        count = ctx.secrets.rotate()
        ctx.close()
    out.print(
        f"re-encrypted {count} secret(s) (webhook signing secrets included) "
        "with the first key of the secret key file"
    )


@admin_app.command("new-secret-key")
def new_secret_key() -> None:
    """Print a new key for secret_key_file (add it as the file's first line to rotate)."""
    from flowdeck.security.vault import new_key

    out.print(new_key())


@admin_app.command("backup")
def backup(
    file: Annotated[Path, typer.Argument(help="The archive to write (.tar, or .tar.gz).")],
    include_key: Annotated[
        bool,
        typer.Option(
            "--include-key",
            help="Put secret_key_file in the archive too (then the archive alone can read "
            "every user's secrets: keep it as safe as the key).",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Back up the database and the files it references while the server runs (SQLite's
    online backup API, or pg_dump); the secret key only with --include-key."""
    from flowdeck.services.backup import backup as make_backup

    settings = settings_from(config)
    with reported():
        report = make_backup(settings, file, include_key=include_key)
    out.print(
        f"backed up the {report.database} database and {report.files} file(s) "
        f"({report.bytes} bytes) to {file}"
        + ("" if report.key_included else "; the secret key is not in it (--include-key)")
    )
    if report.changing:
        out.print(f"{report.changing} file(s) of running runs changed while being copied")


@admin_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="An archive of flowdeck admin backup.")],
    config: ConfigOption = None,
) -> None:
    """Restore a backup into an empty data directory (and an empty database); then start
    the server on it."""
    from flowdeck.services.backup import restore as unpack

    settings = settings_from(config)
    with reported():
        report = unpack(settings, file)
    out.print(f"restored the {report.database} database and {report.files} file(s)")
    if not report.key_restored:
        out.print(
            f"the backup holds no secret key: put the original key file at {report.key_path} "
            "before starting the server, or the stored secrets cannot be read"
        )


@admin_app.command("copy-store")
def copy_store(
    to: Annotated[
        str,
        typer.Option(
            "--to", help="The empty PostgreSQL database: postgresql+psycopg://user@host/db."
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Copy a stopped SQLite store into an empty PostgreSQL database (ids, events, users,
    tokens, secrets as they are); then start the server with database_url set to it."""
    from flowdeck.services.copystore import copy_store as copy

    settings = settings_from(config)
    with reported():
        report = copy(settings, to)
    if report.upgraded_from:
        out.print(f"upgraded the SQLite schema from {report.upgraded_from} first")
    out.print(
        f"copied {report.total} row(s) of {sum(1 for n in report.rows.values() if n)} "
        "table(s); start the server with database_url set to the new database (same "
        "data_dir and secret_key_file)"
    )
