"""Crash consistency for files: written under a temporary name, flushed to disk, renamed,
and only then referenced by a row; leftovers of interrupted writes are swept at start."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                fsync_file(path)
        fsync_dir(Path(dirpath))


def replace(temp: Path, target: Path) -> None:
    """Move a finished temporary file into place, durably."""
    fsync_file(temp)
    os.replace(temp, target)
    fsync_dir(target.parent)


def sweep(
    folder: Path, older_than_s: float, now: float | None = None, keep: frozenset[str] = frozenset()
) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` (entries not touched for
    ``older_than_s``: younger ones may belong to a write in progress; ``keep`` names
    entries to leave)."""
    if not folder.is_dir():
        return []
    limit = (now if now is not None else time.time()) - older_than_s
    removed = []
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.lstat().st_mtime > limit:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
            removed.append(entry)
    return removed
