"""What the command line imports at start-up: typer and rich, not the server's stack (nor
the SDK, imported when a command talks to a server), nor what makes help, usage errors or
parsing slow.  Its timing is a benchmark (``python -m bench.cli``), not a test."""

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


# typer's rich help imports rich's markdown and traceback modules (about 80 ms); typer 0.29
# validates every option with pydantic (about 110 ms)
HEAVY = ("typer.rich_utils", "rich.markdown", "pydantic")


@pytest.mark.parametrize(
    ("args", "loaded", "not_loaded"),
    [
        (["--help"], ("flowdeck.cli.main",), ("flowdeck.cli.runs", "flowdeck.client", *HEAVY)),
        (["run", "list", "--bogus"], ("flowdeck.cli.runs",), ("flowdeck.client", *HEAVY)),
        # the options are parsed, then the command fails: no saved token (no server needed)
        (
            ["run", "list", "--limit", "5", "--state", "running", "--server", "http://127.0.0.1:9"],
            ("flowdeck.cli.runs", "flowdeck.cli.credentials"),
            HEAVY,
        ),
        (["run", "--help"], ("flowdeck.cli.runs", "flowdeck.cli.streams"), ("flowdeck.client",)),
        (["serve", "--help"], ("flowdeck.cli.serve", "flowdeck.config"), ("flowdeck.services",)),
    ],
)
def test_a_command_loads_its_own_module_only(
    args: list[str], loaded: tuple[str, ...], not_loaded: tuple[str, ...]
) -> None:
    code = (
        "import os, sys\nos.environ['XDG_CONFIG_HOME'] = '/nonexistent/flowdeck-test'\n"
        "from flowdeck.cli.main import main\n"
        f"sys.argv = ['flowdeck', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    modules = imported_by(code)
    assert set(loaded) <= modules
    assert under(modules, not_loaded) == []
    assert under(modules, ("sqlalchemy", "fastapi")) == []


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        # a group loaded for one command still lists, suggests and nests as click does
        (["run", "lst"], 2, ("No such command 'lst'", "Did you mean 'list'?")),
        (["run", "--help"], 0, ("list", "watch", "push-input", "rerun", "products")),
        (["run", "list", "--help"], 0, ("--state", "--limit", "Usage: flowdeck run list")),
        (["run", "list", "--limit", "0"], 2, ("Invalid value for '--limit'",)),
        (["admin", "quota", "--help"], 0, ("show", "set")),
        (["db", "--help"], 0, ("upgrade",)),
    ],
)
def test_a_group_loaded_for_one_command_still_lists_suggests_and_checks(
    args: list[str], code: int, says: tuple[str, ...]
) -> None:
    from typer.testing import CliRunner

    from flowdeck.cli.main import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    for text in says:
        assert text in result.output
