"""Generate the synchronous client from the asynchronous one (as httpcore does).

``src/flowdeck/client/_async/*.py`` is the one source of both faces of the SDK; this writes
``src/flowdeck/client/_sync/`` from it with unasync (``async``/``await`` removed, names
changed as ``REPLACEMENTS`` says), formatted by ruff.  ``--check`` writes nothing and
fails, naming the files, if the checked-in ``_sync`` differs from what it would write
(the test suite runs it).

    python scripts/gen_sync_client.py            # regenerate (make sdk)
    python scripts/gen_sync_client.py --check    # exit 1 if _sync is stale
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "src" / "flowdeck" / "client"
SOURCE = CLIENT / "_async"
TARGET = CLIENT / "_sync"
REPLACEMENTS = {
    # our classes: the synchronous face has the plain names
    "AsyncClient": "Client",  # httpx.AsyncClient becomes httpx.Client too
    "AsyncRun": "Run",
    "AsyncGraph": "Graph",
    "AsyncInputPort": "InputPort",
    "AsyncOutputPort": "OutputPort",
    "AsyncProgress": "Progress",
    "_async": "_sync",
    # httpx, httpx-sse and contextlib
    "AsyncBaseTransport": "BaseTransport",
    "aclose": "close",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
    "aiter_sse": "iter_sse",
    "aclosing": "closing",
}
HEADER = "# Generated from client/_async/{name} by scripts/gen_sync_client.py: do not edit.\n"


def ruff(*args: str, source: str, filename: Path) -> str:
    """``source`` through ruff, configured as for ``filename`` (the project's settings)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(filename), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise SystemExit(f"ruff {' '.join(args)} failed on {filename}:\n{done.stderr}")
    return done.stdout


def generate() -> dict[str, str]:
    """The text of every file of ``_sync``, by name."""
    rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=REPLACEMENTS)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "_async"
        shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        sources = sorted(copy.glob("*.py"))
        unasync.unasync_files([str(p) for p in sources], [rule])
        out: dict[str, str] = {}
        for path in sources:
            text = (Path(tmp) / "_sync" / path.name).read_text(encoding="utf-8")
            text = HEADER.format(name=path.name) + text
            target = TARGET / path.name
            text = ruff("check", "--fix-only", "--exit-zero", source=text, filename=target)
            out[path.name] = ruff("format", source=text, filename=target)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    check = parser.parse_args().check
    wanted = generate()
    present = {p.name for p in TARGET.glob("*.py")} if TARGET.is_dir() else set()
    stale = sorted(
        name
        for name in wanted.keys() | present
        if name not in present
        or name not in wanted
        or (TARGET / name).read_text(encoding="utf-8") != wanted[name]
    )
    if check:
        for name in stale:
            path = TARGET / name
            old = path.read_text(encoding="utf-8").splitlines() if name in present else []
            new = wanted.get(name, "").splitlines()
            diff = difflib.unified_diff(old, new, f"_sync/{name}", f"generated {name}", lineterm="")
            print("\n".join(diff))
        if stale:
            print(f"stale: {', '.join(stale)} (run: make sdk)", file=sys.stderr)
        return 1 if stale else 0
    TARGET.mkdir(exist_ok=True)
    for name in stale:
        if name in wanted:
            (TARGET / name).write_text(wanted[name], encoding="utf-8")
        else:
            (TARGET / name).unlink()
    print(f"_sync: {len(stale)} file(s) written" if stale else "_sync: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
