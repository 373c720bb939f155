"""A step's work folder: a retry starts clean, but the folder of an attempt that already
runs is never emptied (a crash can make the server ask again for an attempt the
supervisor started before the server recorded it)."""

from __future__ import annotations

import json
from pathlib import Path

from flowdeck.runtime.launch import work_dir_for

KEY = "run_x/b/-1/2"


def test_the_first_attempt_makes_the_folders(tmp_path: Path) -> None:
    cwd = tmp_path / "work" / "b"
    work_dir_for(cwd, tmp_path / "attempts.jsonl", KEY)
    assert cwd.is_dir() and list(cwd.iterdir()) == []


def test_a_retry_starts_clean(tmp_path: Path) -> None:
    cwd = tmp_path / "work" / "b"
    cwd.mkdir(parents=True)
    (cwd / "out").write_text("from attempt 1")
    journal = tmp_path / "attempts.jsonl"
    journal.write_text(json.dumps({"key": "run_x/b/-1/1", "pid": 1}) + "\n")
    work_dir_for(cwd, journal, KEY)
    assert list(cwd.iterdir()) == []


def test_the_folder_of_an_attempt_already_started_is_kept(tmp_path: Path) -> None:
    cwd = tmp_path / "work" / "b"
    cwd.mkdir(parents=True)
    (cwd / "out").write_text("written by the running attempt")
    journal = tmp_path / "attempts.jsonl"
    lines = [{"key": "run_x/b/-1/1", "pid": 1}, {"key": KEY, "pid": 2}]
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"key": "cut sh')
    work_dir_for(cwd, journal, KEY)
    assert (cwd / "out").read_text() == "written by the running attempt"
