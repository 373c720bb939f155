"""The performance issue's table: each goal beside the figure that answers it, read from
bench/results/latest.json (the figures of the last run of each benchmark).  ``python -m
bench`` prints it at the end; ``python -m bench.goals [--markdown]`` prints it alone.

A goal is judged on a ratio to a floor or a peer measured in the same run, or on a value
where the goal is one; a figure whose benchmark did not run is shown as such.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import common


@dataclass(frozen=True)
class Goal:
    row: str  # the table's row
    bench: str
    figure: str  # a regular expression the figure's name matches
    goal: str  # as the issue says it
    met: Callable[[float, float], bool]  # (value, ratio) -> met?


GOALS = [
    Goal(
        "chain step latency, sandbox on",
        "runs",
        r"chain-\d+: latency per step, sandbox on",
        "<= 1.5x the sandboxed spawn floor",
        lambda v, r: r <= 1.5,
    ),
    Goal(
        "fan-out overhead per step above the floor, sandbox on",
        "runs",
        r"fan-out-\d+: overhead per step above the floor, sandbox on",
        "<= 0.5 ms",
        lambda v, r: v <= 0.5,
    ),
    Goal(
        "single-step runs end to end over HTTP, sandbox on",
        "runs",
        r"\d+ single-step runs over HTTP \(c=16\), sandbox on",
        ">= 0.6x the sandboxed spawn floor",
        lambda v, r: r >= 0.6,
    ),
    Goal(
        "run submissions (c=16), SQLite",
        "submit",
        r"run submissions, run at once \(c=16\), SQLite",
        ">= 0.35x GET /healthz",
        lambda v, r: r >= 0.35,
    ),
    Goal(
        "run submissions (c=16), PostgreSQL",
        "submit",
        r"run submissions, run at once \(c=16\), PostgreSQL",
        ">= 0.35x GET /healthz",
        lambda v, r: r >= 0.35,
    ),
    Goal(
        "WES status, idle p50",
        "wes_status",
        r"WES status of an ended run, idle, p50",
        "<= the fastest WES peer's",
        lambda v, r: r <= 1.0,
    ),
    Goal(
        "WES status p50 while 50 runs execute",
        "wes",
        r"WES status .*while .*p50",
        "<= 3 ms",
        lambda v, r: v <= 3.0,
    ),
    Goal(
        "server CPU per single-step run (no HTTP), SQLite",
        "runtime",
        r"CPU per single-step run .*, SQLite",
        "<= 300 us",
        lambda v, r: v <= 300,
    ),
    Goal(
        "server CPU per single-step run (no HTTP), PostgreSQL",
        "runtime",
        r"CPU per single-step run .*, PostgreSQL",
        "<= 300 us",
        lambda v, r: v <= 300,
    ),
    Goal(
        "submissions/s as the queue grows: last slice (a line fitted over the slices)",
        "queue",
        r"queued runs: submissions/s of the last 10 %, fitted",
        "within 5 % of the first slice",
        lambda v, r: r >= 0.95,
    ),
    Goal(
        "server memory as the queue grows: peak",
        "queue",
        r"queued runs: peak server RSS",
        "independent of queue depth (within 10 %)",
        lambda v, r: r <= 1.10,
    ),
]


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def rows(data: dict[str, Any]) -> list[tuple[Goal, dict[str, Any] | None, str]]:
    """Each goal with its figure (None: its benchmark did not run) and the verdict."""
    out: list[tuple[Goal, dict[str, Any] | None, str]] = []
    for goal in GOALS:
        figures = data.get("benchmarks", {}).get(goal.bench, {}).get("figures", [])
        found = next((f for f in figures if re.search(goal.figure, f["name"])), None)
        if found is None:
            out.append((goal, None, f"not run (python -m bench --only {goal.bench})"))
            continue
        ratio = float(found["ratio"])
        out.append((goal, found, "met" if goal.met(float(found["value"]), ratio) else "MISSED"))
    return out


def print_goals(markdown: bool = False) -> None:
    try:
        data = json.loads(common.RESULTS.read_text())
    except (OSError, ValueError):
        print(f"no figures yet in {common.RESULTS}: run python -m bench")
        return
    table = rows(data)
    if markdown:
        print("| figure | value | baseline or peer (same run) | ratio | goal | |")
        print("|---|---|---|---|---|---|")
    else:
        print("\n== the performance goals (bench/goals.py)")
    for goal, f, verdict in table:
        if f is None:
            cells = [goal.row, "—", "—", "—", goal.goal, verdict]
        else:
            unit = f" {f['unit']}" if f["unit"] else ""
            cells = [
                goal.row,
                f"{_num(f['value'])}{unit}",
                f"{f['baseline_name']}: {_num(f['baseline'])}{unit}",
                f"{f['ratio']:.2f}",
                goal.goal,
                verdict,
            ]
        if markdown:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"  {cells[0]:<52} {cells[1]:>14} | {cells[2]} | ratio {cells[3]}")
            print(f"  {'':<52} goal {cells[4]}: {cells[5]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true", help="as a Markdown table")
    print_goals(parser.parse_args().markdown)


if __name__ == "__main__":
    main()
