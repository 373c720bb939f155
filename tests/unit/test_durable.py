"""Files: replaced durably, and the leftovers of interrupted writes swept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flowdeck import durable


def test_replace_moves_a_finished_file_into_place(tmp_path: Path) -> None:
    temp = tmp_path / ".upload-x"
    temp.write_bytes(b"data")
    target = tmp_path / "inputs" / "a.txt"
    target.parent.mkdir()
    durable.replace(temp, target)
    assert target.read_bytes() == b"data" and not temp.exists()


def test_sweep_removes_old_leftovers_only(tmp_path: Path) -> None:
    old_file = tmp_path / ".upload-old"
    old_file.write_text("x")
    old_dir = tmp_path / "unpack-old"
    (old_dir / "sub").mkdir(parents=True)
    kept = tmp_path / "uploads"
    kept.mkdir()
    young = tmp_path / ".upload-young"
    young.write_text("y")
    hour_ago = time.time() - 3600
    for p in (old_file, old_dir, kept):
        os.utime(p, (hour_ago, hour_ago))
    removed = durable.sweep(tmp_path, 600, keep=frozenset({"uploads"}))
    assert sorted(p.name for p in removed) == [".upload-old", "unpack-old"]
    assert young.exists() and kept.exists() and not old_dir.exists()
    assert durable.sweep(tmp_path / "missing", 600) == []
