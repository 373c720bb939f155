"""``flowdeck graph submit|list|status|watch|pause|resume|stop|kill``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from flowdeck.cli.common import out, reported
from flowdeck.cli.lazy import group_app
from flowdeck.cli.runs import GraceOption, styled
from flowdeck.cli.session import ServerOption, client_for

if TYPE_CHECKING:
    from flowdeck.client import Graph

graph_app = group_app("graph")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
GraphArg = Annotated[str, typer.Argument(help="The graph's id.")]
# The exit code of `graph watch` (and `graph submit --watch`) for each final state.
EXIT_CODES = {"succeeded": 0, "failed": 3, "cancelled": 4, "killed": 5}


def _node_table(graph: dict[str, Any]) -> Table:
    table = Table("node", "workflow", "state", "run", "error", title=f"graph {graph['id']}")
    for n in graph["nodes"]:
        table.add_row(
            n["name"], n["workflow"], styled(n["state"]), n["run_id"] or "", n["error"] or ""
        )
    return table


def _print_graph(graph: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(data=graph)
        return
    out.print(f"graph [bold]{graph['id']}[/] ({graph['name']}): {styled(graph['state'])}")
    out.print(_node_table(graph))


def watch_graph(graph: Graph, as_json: bool) -> None:
    """Follow ``graph`` until it ends, then exit with its state's code."""
    if as_json:
        final = graph.wait()
        out.print_json(data=final)
    else:
        with Live(_node_table(graph.data), console=out, refresh_per_second=8) as live:
            final = graph.wait(progress=lambda g: live.update(Group(_node_table(g))))
        if not out.is_terminal:
            out.line()  # rich ends a live display with a new line only on a terminal
        line = f"graph {graph.id} {final['state']}"
        if final.get("error"):
            line += f": {final['error'].get('message', final['error'])}"
        out.print(line, highlight=False)
    raise typer.Exit(EXIT_CODES.get(final["state"], 1))


@graph_app.command("submit")
def submit(
    file: Annotated[
        Path, typer.Argument(help="A YAML or JSON file: {name, nodes, edges, bindings}.")
    ],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Then follow it.")] = False,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create and submit a graph (every problem is reported and nothing is stored)."""
    from flowdeck.client.files import load_graph_file

    with reported(), client_for(server) as client:
        spec = load_graph_file(file)
        graph = client.create_graph(
            spec.get("name"),
            spec.get("nodes"),
            spec.get("edges"),
            spec.get("bindings"),
            submit=True,
        )
        if watch:
            watch_graph(graph, as_json)
    _print_graph(graph.data, as_json)


@graph_app.command("list")
def list_graphs(
    state: Annotated[str | None, typer.Option(help="Only graphs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your graphs, newest first."""
    with reported(), client_for(server) as client:
        items = client.graphs(state=state, limit=limit)
    if as_json:
        out.print_json(data=items)
        return
    table = Table("graph", "name", "state", "created")
    for g in items:
        table.add_row(g["id"], g["name"], styled(g["state"]), g["created_at"][:19])
    out.print(table)


@graph_app.command("status")
def status(graph_id: GraphArg, server: ServerOption = None, as_json: JsonOption = False) -> None:
    """The graph's state and its nodes."""
    with reported(), client_for(server) as client:
        graph = client.graph(graph_id)
    _print_graph(graph.data, as_json)


@graph_app.command("watch")
def watch(
    graph_id: GraphArg,
    server: ServerOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final status as JSON.")
    ] = False,
) -> None:
    """Show the nodes live until the graph ends.  Exit code: 0 succeeded, 3 failed,
    4 cancelled, 5 killed, 1 on an error."""
    with reported(), client_for(server) as client:
        watch_graph(client.graph(graph_id), as_json)


def _act(server: str | None, graph_id: str, as_json: bool, action: str, **kw: Any) -> None:
    with reported(), client_for(server) as client:
        graph = client.graph(graph_id)
        getattr(graph, action)(**kw)
    if as_json:
        out.print_json(data=graph.data)
    else:
        out.print(f"graph [bold]{graph.id}[/]: {styled(graph.state)}")


def _control(action: str, help_text: str) -> None:
    def command(
        graph_id: GraphArg, server: ServerOption = None, as_json: JsonOption = False
    ) -> None:
        _act(server, graph_id, as_json, action)

    command.__doc__ = help_text
    graph_app.command(action)(command)


_control("pause", "Pause every running run of the graph; no node starts while paused.")
_control("resume", "Resume the graph's runs; waiting nodes may start again.")
_control("kill", "Kill the graph now: waiting nodes cancelled, runs killed.")


@graph_app.command("stop")
def stop(
    graph_id: GraphArg,
    grace: GraceOption = None,
    server: ServerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop the graph: waiting nodes cancelled, runs stopped."""
    _act(server, graph_id, as_json, "stop", grace_s=grace)
