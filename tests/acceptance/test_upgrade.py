"""Upgrades: the previous version of flowdeck (this repository at the commit before its
latest migration) runs steps; the current version, started on the same data directory,
migrates the schema while those steps go on, and adopts them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

import pytest

from flowdeck.client import Client
from flowdeck.store.migrate import head_revision
from tests.helpers import STRONG
from tests.serving import serve

REPO = Path(__file__).parents[2]
VERSIONS = Path("src/flowdeck/store/migrations/versions")
PROJECT = ("pyproject.toml", "README.md")  # what building the package needs besides src
TWO_STEPS = """name: twosteps
version: "1"
steps:
  nap:
    run: [sh, -c, "sleep 6; echo rested > rested.txt"]
    outputs:
      rested: {path: rested.txt}
  after:
    needs: [nap]
    run: [echo, done]
"""


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"no git history of this checkout: {done.stderr.strip()}")
    return done.stdout.strip()


def previous_version(dest: Path) -> tuple[Path, str]:
    """The commit before the one that added the latest migration, installed into a virtual
    environment of its own: its ``flowdeck`` program and its schema revision."""
    latest = max((REPO / VERSIONS).glob("[0-9]*.py"))
    added = git(  # (a merge that brought it counts: its diff against its first parent)
        "log",
        "-1",
        "--format=%H",
        "--first-parent",
        "-m",
        "--no-renames",
        "--diff-filter=A",
        "--",
        str(VERSIONS / latest.name),
    )
    if not added:
        pytest.skip(f"{latest.name} is not committed yet")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "previous.tar"
    git("archive", "--format=tar", f"--output={archive}", f"{added}^", "src", *PROJECT)
    tree = dest / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    old = sorted(p.name for p in (tree / VERSIONS).glob("[0-9]*.py"))[-1]
    return install(tree, dest / "venv"), old.split("_", 1)[0]


def install(tree: Path, venv: Path) -> Path:
    """``tree`` built and installed (a wheel, not editable) into the new environment
    ``venv``; the third-party packages it imports are this environment's (a .pth file
    names its site-packages, whose own .pth files, this checkout's among them, are not
    read), so only the build backend is fetched.  Its ``flowdeck`` program."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    theirs = subprocess.check_output([str(python), "-c", purelib], text=True).strip()
    (Path(theirs) / "shared-dependencies.pth").write_text(sysconfig.get_paths()["purelib"])
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(tree)]
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin" / "flowdeck"


def revision(data: Path) -> str:
    with sqlite3.connect(data / "flowdeck.db") as db:
        return str(db.execute("select version_num from alembic_version").fetchone()[0])


def test_a_new_version_migrates_and_adopts_the_steps_of_the_previous_one(
    tmp_path: Path,
) -> None:
    old_program, old_revision = previous_version(tmp_path / "previous")
    assert old_revision != head_revision()
    data = tmp_path / "data"
    (tmp_path / "twosteps.yaml").write_text(TWO_STEPS)
    args = ("--data-dir", str(data), "--registration", "open")
    old_env = {"PYTHONPATH": ""}  # (the tests' own path reaches this checkout)
    with (
        serve(tmp_path, *args, env=old_env, command=[str(old_program)]) as (url, log),
        Client(url) as c,
    ):
        c.register("ada", STRONG)
        token = c.login("ada", STRONG)["token"]
        c.push_workflow(tmp_path / "twosteps.yaml")
        runs = [c.create_run("twosteps@1", start=True) for _ in range(2)]
        deadline = time.monotonic() + 60
        while not all(c.run(r.id).data["current_steps"] == ["nap"] for r in runs):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    # the previous version stopped; its supervisor keeps the steps running
    assert revision(data) == old_revision
    with (
        serve(tmp_path, "--data-dir", str(data)) as (url, _),
        Client(url, token) as c,
    ):
        assert revision(data) == head_revision()  # migrated at start
        for run in runs:
            assert c.run(run.id).wait(timeout=120)["state"] == "succeeded"
            nap = next(s for s in c.run(run.id).steps() if s["name"] == "nap")
            assert nap["attempts"] == 1  # adopted where it was, not run again
    # one supervisor all along: the previous version's (protocol 0, spoken by this one)
    # ran the adopted steps and the steps after them
    assert (data / "supervisor.log").read_text().count(" serving ") == 1
