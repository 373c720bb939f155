"""The README's quick start and every example, as a new user runs them: `flowdeck serve`
(the console script) in a fresh folder with the default settings (data in the relative
./flowdeck-data), the first admin made with `flowdeck admin create-user`, then the command
line only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import STRONG
from tests.serving import serve

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
EXE = Path(sys.executable).parent / "flowdeck"  # the README's .venv/bin/flowdeck
TEXT = "The cat and the dog.\nA cat is a cat; the dog is a dog of the house.\n"


class Terminal:
    """A user's shell in ``home``: the flowdeck console script with its own config dir."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "COLUMNS": "200",
        }
        for name in ("FLOWDECK_URL", "FLOWDECK_TOKEN", "FLOWDECK_DATA_DIR"):
            self.env.pop(name, None)

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> str:
        done = subprocess.run(
            [str(EXE), *args],
            cwd=self.home,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self(*args, "--json", stdin=stdin))


@pytest.fixture(scope="module")
def sh(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("newcomer")
    term = Terminal(home)
    with serve(home, command=[str(EXE)]) as (url, _log):
        # README: create the first admin, log in, who am I
        term("admin", "create-user", "--admin", "alice", stdin=f"{STRONG}\n{STRONG}\n")
        term("login", "--server", url, "-u", "alice", stdin=f"{STRONG}\n")
        assert "alice" in term("whoami")
        (home / "notes.txt").write_text(TEXT)
        yield term
    assert (home / "flowdeck-data" / "flowdeck.db").is_file()  # the relative default


def submitted(sh: Terminal, *args: str) -> dict[str, Any]:
    """``run submit … --watch`` as the README shows it, then the run's final status."""
    out = sh("run", "submit", *args, "--watch")
    assert "succeeded" in out, out
    newest = sh.json("run", "list", "--limit", "1")[0]
    status: dict[str, Any] = sh.json("run", "status", newest["id"])
    assert status["state"] == "succeeded", status
    return status


def test_the_readme_quick_start(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "files"))
    status = submitted(sh, "sort-lines@1.0", "--file", "text=notes.txt", "-p", "reverse=true")
    assert status["outputs"]["lines"] == 2


def test_chain(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "chain"))
    outputs = submitted(sh, "chain@1.0")["outputs"]
    assert outputs["shouted"] == "HELLO WORLD" and outputs["length"] == 11


def test_fanout(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "fanout"))
    sentence = submitted(sh, "fanout@1.0", "-p", 'words=["x", "yz"]')["outputs"]["sentence"]
    assert sentence.strip() == "X YZ"


def test_wordcount_a_python_step_from_the_archive(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "wordcount"))
    outputs = submitted(sh, "wordcount@1.0", "--file", "text=notes.txt")["outputs"]
    assert outputs["total"] == len(TEXT.split())


def test_scripts_and_data_files_from_the_archive(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "scripts"))
    status = submitted(sh, "tally@1.0", "--file", "text=notes.txt")
    assert status["outputs"]["top"] == "cat"
    saved = sh.home / "counts.txt"
    sh("run", "download", status["id"], "tally.counts", "-o", str(saved))
    assert saved.read_text().splitlines()[:2] == ["3 cat", "3 dog"]


def test_streams(sh: Terminal) -> None:
    sh("workflow", "push", str(EXAMPLES / "streams"))
    run = sh.json("run", "submit", "double@1.0")
    records = "".join(json.dumps({"n": n}) + "\n" for n in (1, 2, 21))
    sh("run", "push-input", run["id"], "records", "--file", "-", "--close", stdin=records)
    lines = sh("run", "read-output", run["id"], "results", "--follow", "--json").splitlines()
    assert [json.loads(line)["data"]["double"] for line in lines] == [2, 4, 42]
    assert "succeeded" in sh("run", "watch", run["id"])


def test_a_cwl_document(sh: Terminal) -> None:
    pushed = sh.json("workflow", "push", str(ROOT / "tests" / "data" / "cwl" / "greet.cwl"))
    status = submitted(sh, f"greet@{pushed['version']}", "-p", "name=newcomer")
    products = sh.json("run", "products", status["id"])
    saved = sh.home / "greeting.txt"
    sh("run", "download", status["id"], products[0]["name"], "-o", str(saved))
    assert saved.read_text() == "Hello newcomer\n"
