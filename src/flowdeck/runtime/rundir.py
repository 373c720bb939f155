"""The layout of a run's directory.

<data_dir>/runs/<run_id>/
    inputs/<input>/<file>       staged uploads and snapshots of other runs' products
    work/<step>[.<i>]/          each step instance's working directory (its outputs)
    tmp/                        scratch ($TMPDIR)
    logs/<step>[.<i>].<attempt>.stdout|stderr
    logs/attempts.jsonl         the supervisor's journal: pid, start, outcome per attempt
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from flowdeck.store.base import Tx


def label(step: str, index: int) -> str:
    return step if index < 0 else f"{step}.{index}"


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path
    # the subdirectories, joined once (a step's start asks for them several times)
    inputs: Path = field(init=False, repr=False, compare=False)
    work: Path = field(init=False, repr=False, compare=False)
    tmp: Path = field(init=False, repr=False, compare=False)
    logs: Path = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("inputs", "work", "tmp", "logs"):
            object.__setattr__(self, name, self.root / name)

    @classmethod
    def of(cls, data_dir: Path, run_id: str) -> RunDir:
        return cls((data_dir / "runs" / run_id).absolute())

    def input_dir(self, name: str) -> Path:
        return self.inputs / name

    def step_dir(self, step: str, index: int) -> Path:
        return self.work / label(step, index)

    def log(self, step: str, index: int, attempt: int, stream: str) -> Path:
        return self.logs / f"{label(step, index)}.{attempt}.{stream}"

    @property
    def attempts(self) -> Path:
        """The run's attempt journal, kept by the step supervisor (one line per change of
        an attempt: ``executors/wire.py``)."""
        return self.logs / "attempts.jsonl"

    def create(self) -> None:
        """What a starting run needs (inputs/ appears with the first staged file, work/
        with the first step)."""
        # os.mkdir level by level: a starting run's directory is new, and Path.mkdir with
        # parents goes through an exception and path comparisons per missing level
        try:
            for d in (self.root, self.tmp, self.logs):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d, 0o700)
        except FileNotFoundError:  # the first run of a new data directory
            for d in (self.tmp, self.logs):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove_work(self) -> None:
        """What kill removes: work, scratch and staged inputs; logs stay."""
        for d in (self.work, self.tmp, self.inputs):
            shutil.rmtree(d, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def contains(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        return True


def attempt_key(run_id: str, step: str, index: int, attempt: int) -> str:
    """An attempt's name with the supervisor, and its key in the attempt journal."""
    return f"{run_id}/{step}/{index}/{attempt}"


def forget_removed_files(tx: Tx, run_id: str) -> None:
    """Unlist the staged files whose bytes :meth:`RunDir.remove_work` deletes (uploads and
    snapshots under ``inputs/``); references to files under ``data_root`` stay."""
    for staged in tx.list_staged_files(run_id):
        if staged.source != "data_root":
            tx.delete_staged_file(run_id, staged.input, staged.filename)
