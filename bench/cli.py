"""The command line's start-up: the wall time of ``flowdeck --help`` and of ``flowdeck run
list`` (against a live server, as a logged-in user with 20 runs), each beside ``python -c
pass`` measured in the same run (the interpreter's own start-up).  Goal: within 150 ms of
it.  Each command is a fresh process, run ``--repeat`` times; the median is reported.

    python -m bench.cli [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, median, report
from bench.server import PASSWORD, server
from flowdeck.client import Client

GOAL_MS = 150.0
# What a listing cannot do without: an httpx client made, a rich table of 20 rows printed.
LISTING = """
import ssl, sys
sys.modules["httpx._main"] = None
def listing():
    import httpx
    from rich.console import Console
    from rich.table import Table
    httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)).close()
    table = Table("id", "workflow", "state", "created", "tags")
    for i in range(20):
        table.add_row(f"run_{i:026d}", "quick@1", "staged", "2026-12-05T00:00:00", "")
    Console().print(table)
"""
LIBRARIES = LISTING + "listing()\n"
# The floor of the stack the command line is built on: the listing from a typer program with
# the options of `run list`, and nothing of flowdeck.  What `run list` takes above it is
# flowdeck's own.
FLOOR = (
    LISTING
    + """
from typing import Annotated
import typer
app = typer.Typer()
@app.command()
def ls(
    state: Annotated[list[str] | None, typer.Option("--state")] = None,
    workflow: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    server: str | None = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    listing()
@app.command()
def other() -> None: ...
app()
"""
)
QUICK = 'name: quick\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


def _flowdeck() -> list[str]:
    """The installed ``flowdeck`` script, as a user runs it (else ``python -m flowdeck``)."""
    script = Path(sys.executable).parent / "flowdeck"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flowdeck"]


def _walls_ms(commands: dict[str, list[str]], env: dict[str, str], repeat: int) -> dict[str, float]:
    """The median wall time of each command, in ms.  The commands take turns, round by round,
    so that a slower spell of the machine weighs on all of them alike; one warm-up round
    first (the file cache, the bytecode caches)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(repeat + 1):
        for name, command in commands.items():
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, check=False)
            elapsed = (time.perf_counter() - t0) * 1000
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
            if i:
                times[name].append(elapsed)
    return {name: median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with server() as (url, token, _data, _pid), tempfile.TemporaryDirectory() as home:
        with Client(url, token) as fd:
            fd.request(
                "POST", "/api/v1/workflows", content=QUICK, headers={"content-type": "text/yaml"}
            )
            for _ in range(20):
                fd.create_run("quick@1")
        # PYTHONDONTWRITEBYTECODE off: the warm-up writes the bytecode caches, as a first
        # run does for a user (pip compiles an installed package's when it installs it)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOWDECK_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env |= {"XDG_CONFIG_HOME": home, "COLUMNS": "120"}
        login = [*_flowdeck(), "login", "--server", url, "-u", "bench"]
        subprocess.run(login, env=env, input=PASSWORD.encode(), capture_output=True, check=True)
        walls = _walls_ms(
            {
                "python": [sys.executable, "-c", "pass"],
                "imports": [sys.executable, "-c", "import flowdeck.cli.main"],
                "helped": [*_flowdeck(), "--help"],
                "listed": [*_flowdeck(), "run", "list"],
                "floor": [sys.executable, "-c", FLOOR, "ls"],
                "libraries": [sys.executable, "-c", LIBRARIES],
            },
            env,
            args.repeat,
        )
    python, imports, helped = walls["python"], walls["imports"], walls["helped"]
    listed, floor, libraries = walls["listed"], walls["floor"], walls["libraries"]
    goal = f"<= {GOAL_MS:.0f} ms over the baseline"
    baseline = "python -c pass"
    report(
        "cli",
        [
            Figure("flowdeck --help, median", helped, "ms", baseline, python, goal),
            Figure("flowdeck run list (live server), median", listed, "ms", baseline, python, goal),
            Figure("import flowdeck.cli.main, median", imports, "ms", baseline, python),
            Figure("typer + httpx + rich alone (the floor)", floor, "ms", baseline, python),
            Figure("httpx + rich alone (no typer)", libraries, "ms", baseline, python),
            Figure("flowdeck run list, beside the floor", listed, "ms", "the floor", floor),
        ],
        {
            "repeat": args.repeat,
            "over_baseline_ms": {
                "help": round(helped - python, 1),
                "run_list": round(listed - python, 1),
                "import": round(imports - python, 1),
                "floor": round(floor - python, 1),
                "libraries": round(libraries - python, 1),
            },
        },
    )
    print(
        f"  over the baseline: --help {helped - python:.0f} ms, run list {listed - python:.0f} ms,"
        f" import {imports - python:.0f} ms (goal {GOAL_MS:.0f} ms); the stack's floor"
        f" {floor - python:.0f} ms, run list above it {listed - floor:.0f} ms; httpx + rich"
        f" alone {libraries - python:.0f} ms"
    )


if __name__ == "__main__":
    main()
