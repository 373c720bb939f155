"""``flowdeck admin status``: queue, running steps, slots, active runs and recent failures on
one screen, read from the store (run it on the server's machine, with its configuration)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from flowdeck.cli.common import ConfigOption, out, reported, settings_from
from flowdeck.domain.quotas import human_bytes
from flowdeck.services.context import build_context
from flowdeck.services.status import Summary, summary


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One-screen summary: queue depth, running steps, slots, active runs, recent failures."""
    settings = settings_from(config)
    with reported():
        ctx = build_context(settings)
        try:
            found = summary(ctx.store, settings)
        finally:
            ctx.close()
    if as_json:
        out.print_json(json.dumps(found.as_dict()))
        return
    show(found)


def show(s: Summary) -> None:
    oldest = f" (oldest waiting {s.oldest_queued_s:.0f} s)" if s.oldest_queued_s is not None else ""
    grid = Table.grid(padding=(0, 2))
    grid.add_row("[bold]server instances[/]", f"{s.instances} live")
    grid.add_row("[bold]queue[/]", f"{s.queue_depth} runs queued{oldest}")
    grid.add_row("[bold]running steps[/]", str(s.running_steps))
    grid.add_row("[bold]slots[/]", f"{s.slots_used} used of {s.slots_total}")
    grid.add_row(
        "[bold]active runs[/]", "  ".join(f"{state} {n}" for state, n in s.active_runs.items())
    )
    if s.sandbox == "off":
        grid.add_row("[bold]step sandbox[/]", "[red]off: steps run with the server's rights[/]")
    else:
        grid.add_row("[bold]step sandbox[/]", f"{s.sandbox}, one per {s.sandbox_scope}")
    grid.add_row("[bold]step limits[/]", s.step_limits)
    grid.add_row("[bold]cwl warm workers[/]", s.cwl_workers)
    free = (
        f", {human_bytes(s.disk_free_bytes)} free of {human_bytes(s.disk_total_bytes)}"
        if s.disk_free_bytes is not None and s.disk_total_bytes is not None
        else ""
    )
    grid.add_row("[bold]disk[/]", f"{human_bytes(s.stored_bytes_total)} stored{free}")
    out.print(f"flowdeck status at {s.at:%Y-%m-%d %H:%M:%S} UTC")
    out.print(grid)
    if s.live:
        table = Table(title="server instances")
        table.add_column("instance", no_wrap=True)
        for column in ("host", "pid", "since", "heartbeat", "active runs", "running steps"):
            table.add_column(column)
        for i in s.live:
            table.add_row(
                i.id,
                i.host,
                str(i.pid),
                f"{i.started_at:%Y-%m-%d %H:%M:%S}",
                f"{i.heartbeat_age_s:.0f} s ago",
                str(i.active_runs),
                str(i.running_steps),
            )
        out.print(table)
    if s.stored_bytes:
        table = Table(title="stored per user (uploads and products)")
        table.add_column("user")
        table.add_column("stored", justify="right")
        for user, n in s.stored_bytes.items():
            table.add_row(user, human_bytes(n))
        out.print(table)
    if not s.recent_failures:
        out.print("[bold]recent failures[/]  none")
        return
    table = Table(title="recent failures")
    table.add_column("run", no_wrap=True)  # ids are copied from here: never broken
    for column in ("owner", "workflow", "state", "finished", "error"):
        table.add_column(column)
    for f in s.recent_failures:
        table.add_row(
            f.run_id,
            f.owner,
            f.workflow,
            f.state,
            f"{f.finished_at:%Y-%m-%d %H:%M:%S}" if f.finished_at else "-",
            f.message or "-",
        )
    out.print(table)
