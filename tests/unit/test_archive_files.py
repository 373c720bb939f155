"""Which words of a step's command name a file of the workflow's archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdeck.runtime.steps import from_archive


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    for name in ("tool.sh", "tool.py", "bin/helper", "data.txt"):
        (tmp_path / name).write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "resolved"),
    [
        (["tool.sh", "x"], [0]),  # a relative program of the archive
        (["bin/helper"], [0]),
        (["python3", "tool.py", "tool.sh"], [1]),  # the script of an interpreter only
        (["python3.11", "-X", "tool.py", "tool.py"], [3]),  # -X takes a value
        (["python3", "-u", "tool.py"], [2]),
        (["sh", "-e", "tool.sh"], [2]),  # -e of a shell is an option, not code
        (["perl", "-e", "tool.sh"], []),  # code follows -e
        (["python3", "-c", "tool.py"], []),
        (["bash", "-c", "tool.sh"], []),
        (["cat", "data.txt"], []),  # not an interpreter: its arguments are its business
        (["sort"], []),  # not in the archive: from PATH
        (["../tool.sh"], []),  # outside the archive
        (["/bin/echo", "tool.sh"], []),
        (["python3", "missing.py"], []),
    ],
)
def test_archive_files_named_by_a_command(code: Path, argv: list[str], resolved: list[int]) -> None:
    got = from_archive(argv, code)
    assert len(got) == len(argv)
    for i, (before, after) in enumerate(zip(argv, got, strict=True)):
        assert after == (str(code / before) if i in resolved else before), (i, got)
