"""One SDK with two faces: the synchronous code is generated from the asynchronous code
and checked in; both faces offer the same methods, parameters and documentation; the
client package has no import cycle."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import flowdeck.client as sdk

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "flowdeck" / "client"
PAIRS = [
    (sdk.Client, sdk.AsyncClient),
    (sdk.Run, sdk.AsyncRun),
    (sdk.Graph, sdk.AsyncGraph),
    (sdk.InputPort, sdk.AsyncInputPort),
    (sdk.OutputPort, sdk.AsyncOutputPort),
]
ASYNC_NAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def test_the_checked_in_synchronous_client_is_what_the_generator_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_sync_client.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def public(cls: type) -> dict[str, Any]:
    names = {
        ASYNC_NAMES.get(name, name): value
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") or name in {*ASYNC_NAMES, *ASYNC_NAMES.values(), "__init__"}
    }
    return names


def shape(member: Any) -> tuple[list[tuple[str, Any, Any]], str | None]:
    """Parameter names, kinds and defaults, and the docstring (not the annotations:
    ``AsyncIterator[Event]`` is ``Iterator[Event]`` on the other face)."""
    if isinstance(member, property):
        return [], member.__doc__
    if not callable(member):
        return [("value", None, member)], None
    params = inspect.signature(member).parameters.values()
    return [(p.name, p.kind, p.default) for p in params], inspect.getdoc(member)


@pytest.mark.parametrize(("sync", "aio"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_both_faces_offer_the_same_methods_parameters_and_docs(sync: type, aio: type) -> None:
    ours, theirs = public(sync), public(aio)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert shape(ours[name]) == shape(theirs[name]), f"{sync.__name__}.{name}"


def test_a_blocking_method_on_one_face_is_awaitable_or_iterable_on_the_other() -> None:
    run = public(sdk.AsyncRun)
    assert inspect.iscoroutinefunction(run["wait"])
    assert inspect.isasyncgenfunction(run["events"])
    assert inspect.isasyncgenfunction(public(sdk.AsyncOutputPort)["read"])
    assert inspect.isgeneratorfunction(public(sdk.Run)["events"])
    assert not inspect.iscoroutinefunction(public(sdk.Run)["wait"])


def imports_of(path: Path) -> set[str]:
    """The ``flowdeck.client`` modules that a module imports (at any level of its code)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("flowdeck.client")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_client_package_has_no_import_cycle() -> None:
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    # a package's __init__ imports its modules; a module importing its own package's
    # __init__ would be an edge into it, so package edges stay
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert "flowdeck.client._sync.client" in graph  # the walk saw the generated face


def test_every_method_docs_sdk_md_lists_exists_on_both_faces() -> None:
    """docs/sdk.md's table names each object's methods and attributes; both faces have
    each of them."""
    text = (ROOT / "docs" / "sdk.md").read_text(encoding="utf-8")
    with sdk.Client("http://127.0.0.1:9") as client:
        aclient = sdk.AsyncClient("http://127.0.0.1:9")
        data = {"id": "x", "state": "staged"}
        faces = {
            "Client": (client, aclient),
            "Run": (sdk.Run(client, data), sdk.AsyncRun(aclient, data)),
            "Graph": (sdk.Graph(client, data), sdk.AsyncGraph(aclient, data)),
            "InputPort": (sdk.InputPort(client, "x", "p"), sdk.AsyncInputPort(aclient, "x", "p")),
            "OutputPort": (
                sdk.OutputPort(client, "x", "p"),
                sdk.AsyncOutputPort(aclient, "x", "p"),
            ),
        }
        checked = 0
        for line in text.splitlines():
            cells = line.split(" | ")
            if len(cells) != 2 or not cells[0].startswith("| `"):
                continue
            # "`input(port)` → `InputPort`: `write(records)`": what follows is the port's
            row = cells[0].strip("| `").split("`")[0]
            for group in cells[1].split(" · "):
                parts = re.split(r"→ `(\w+)`: ", group)
                objs = [row, *parts[1::2]]
                for obj, part in zip(objs, parts[::2], strict=True):
                    names = re.findall(r"(?:^|, |: )`([a-z_]+)[(`]", part) if obj in faces else []
                    for name, each in itertools.product(names, faces.get(obj, ())):
                        assert hasattr(each, name), f"docs/sdk.md: {obj}.{name}; {each!r} lacks it"
                        checked += 1
        anyio.run(aclient.aclose)
    assert checked > 80
