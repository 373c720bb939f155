"""``flowdeck run watch`` (a live progress bar and step table until the run ends) and
``flowdeck run logs [-f]``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from flowdeck.cli.common import out, reported
from flowdeck.cli.session import ServerOption, client_for

if TYPE_CHECKING:
    from flowdeck.client import Run

# The exit code of `run watch` (and `run submit --watch`) for each final state.
EXIT_CODES = {"succeeded": 0, "failed": 3, "cancelled": 4, "killed": 5, "system_error": 6}

RunArg = Annotated[str, typer.Argument(help="The run's id.")]


def in_start_order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps by start time, then name and index; those not started yet last."""

    def key(step: dict[str, Any]) -> tuple[bool, datetime, str, int]:
        started = step.get("started_at")
        at = datetime.fromisoformat(started) if started else datetime.min.replace(tzinfo=UTC)
        index = step.get("index")
        return started is None, at, str(step["name"]), -1 if index is None else int(index)

    return sorted(steps, key=key)


def step_table(steps: list[dict[str, Any]]) -> Table:
    """The steps, in start order; on Slurm, with each step's job id, and why a pending
    step's job waits (``pending (Resources)``; on Dask ``pending (no Dask worker ...)``)."""
    slurm = any(s.get("slurm_job") for s in steps)
    columns = ["step", "state", "attempts", "duration", "exit"] + (["slurm job"] if slurm else [])
    table = Table(*columns, title="steps", expand=False)
    for s in in_start_order(steps):
        duration = f"{s['duration_s']:.1f}s" if s["duration_s"] is not None else ""
        code = "" if s["exit_code"] is None else str(s["exit_code"])
        reason = s.get("slurm_reason") or s.get("dask_reason")
        state = s["state"] + (f" ({reason})" if reason else "")
        row = [s["label"], state, str(s["attempts"]), duration, code]
        table.add_row(*row, *([s.get("slurm_job") or ""] if slurm else []))
    return table


class RunClock(ProgressColumn):
    """The run's running time as its status gives it (from its start, paused time
    excluded), ticking on between two statuses while it runs: the run's clock, not the
    watch's."""

    def render(self, task: Task) -> Text:
        seconds: float | None = task.fields.get("running_s")
        if seconds is None:
            return Text("-:--:--", style="progress.elapsed")
        if task.fields.get("ticking"):
            seconds += time.monotonic() - task.fields["at"]
        return Text(str(timedelta(seconds=int(seconds))), style="progress.elapsed")


def clock_fields(status: dict[str, Any]) -> dict[str, Any]:
    """What :class:`RunClock` needs of a status."""
    started = status.get("started_at") is not None
    return {
        "running_s": float(status.get("running_s") or 0.0) if started else None,
        "ticking": started and not status.get("finished_at") and status["state"] != "paused",
        "at": time.monotonic(),
    }


def watch_run(run: Run, as_json: bool) -> None:
    """Follow ``run`` until it ends, then exit with its state's code."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RunClock(),
        console=out,
    )
    task = bar.add_task(run.id, total=None)

    def render(status: dict[str, Any]) -> Group:
        progress = status["progress"]
        bar.update(
            task,
            total=progress["total"] or None,
            completed=progress["done"],
            description=f"{run.id} {status['state']}",
            **clock_fields(status),
        )
        return Group(bar, step_table(run.steps()))

    if as_json:
        final = run.wait()
    else:
        with Live(render(run.data), console=out, refresh_per_second=8, transient=False) as live:
            final = run.wait(progress=lambda s: live.update(render(s)))
        if not out.is_terminal:
            out.line()  # rich ends a live display with a new line only on a terminal
    if as_json:
        out.print_json(data=final)
    else:
        line = f"run {run.id} {final['state']}"
        if final["error"]:
            line += f": {final['error'].get('step')}: {final['error'].get('message')}"
        out.print(line, highlight=False)
    raise typer.Exit(EXIT_CODES.get(final["state"], 1))


def watch(
    run_id: RunArg,
    server: ServerOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final status as JSON.")
    ] = False,
) -> None:
    """Show a live progress bar and step table until the run ends.  Exit code: 0
    succeeded, 3 failed, 4 cancelled, 5 killed, 6 system_error, 1 on an error."""
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        watch_run(run, as_json)


def _print_chunk(data: bytes) -> None:
    sys.stdout.write(data.decode("utf-8", errors="replace"))
    sys.stdout.flush()


def logs(
    run_id: RunArg,
    step: Annotated[str | None, typer.Argument(help="A step (default: every step).")] = None,
    stream: Annotated[str, typer.Option(help="stdout or stderr.")] = "stdout",
    index: Annotated[int, typer.Option(help="The instance of a foreach step.")] = -1,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    server: ServerOption = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per piece: {step, stream, offset, text}."),
    ] = False,
) -> None:
    """Print step logs; with -f, follow them until the run ends."""
    offsets: dict[tuple[str, int], int] = {}
    with reported(), client_for(server) as client:
        run = client.run(run_id)
        while True:
            done = run.done
            steps = [
                s
                for s in run.steps()
                if (step is None or s["name"] == step)
                and (index == -1 or s["index"] == index)
                and s["attempts"] > 0
            ]
            for s in steps:
                key = (s["name"], -1 if s["index"] is None else s["index"])
                while True:
                    data, nxt = run.logs(s["name"], stream, key[1], offset=offsets.get(key, 0))
                    if not data:
                        break
                    if as_json:
                        piece = {
                            "step": s["label"],
                            "stream": stream,
                            "offset": offsets.get(key, 0),
                            "text": data.decode("utf-8", errors="replace"),
                        }
                        typer.echo(json.dumps(piece))
                    else:
                        if step is None and key not in offsets:
                            out.print(f"[bold]== {s['label']} ({stream}) ==[/]")
                        _print_chunk(data)
                    offsets[key] = nxt
            if not follow or done:
                return
            time.sleep(0.3)
            run.status()
