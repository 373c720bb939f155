"""What the command line imports at start-up: typer and rich, not the server's stack (nor
the SDK, imported when a command talks to a server).  Its timing is a benchmark
(``python -m bench.cli``), not a test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_STACK = (
    "flowdeck.services",
    "flowdeck.store",
    "flowdeck.api",
    "flowdeck.runtime",
    "flowdeck.config",
    "sqlalchemy",
    "fastapi",
    "uvicorn",
    "pydantic_settings",
)


def imported_by(code: str) -> set[str]:
    """The modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def under(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.startswith(prefixes))


def test_importing_the_cli_loads_neither_the_server_stack_nor_the_sdk() -> None:
    modules = imported_by("import flowdeck.cli.main")
    assert under(modules, SERVER_STACK) == []
    assert under(modules, ("flowdeck.client", "httpx", "yaml")) == []
    assert {"typer", "rich"} <= modules


@pytest.mark.parametrize(
    ("args", "loaded", "not_loaded"),
    [
        (["--help"], ("flowdeck.cli.main",), ("flowdeck.cli.runs", "flowdeck.client")),
        (["run", "--help"], ("flowdeck.cli.runs", "flowdeck.cli.streams"), ("flowdeck.client",)),
        (["serve", "--help"], ("flowdeck.cli.serve", "flowdeck.config"), ("flowdeck.services",)),
    ],
)
def test_a_command_loads_its_own_module_only(
    args: list[str], loaded: tuple[str, ...], not_loaded: tuple[str, ...]
) -> None:
    code = (
        "import sys\nfrom flowdeck.cli.main import main\n"
        f"sys.argv = ['flowdeck', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    modules = imported_by(code)
    assert set(loaded) <= modules
    assert under(modules, not_loaded) == []
    assert under(modules, ("sqlalchemy", "fastapi")) == []
