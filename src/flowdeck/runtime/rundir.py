"""The layout of a run's directory.

<data_dir>/runs/<run_id>/
    inputs/<input>/<file>       staged uploads and snapshots of other runs' products
    work/<step>[.<i>]/          each step instance's working directory (its outputs)
    tmp/                        scratch ($TMPDIR)
    logs/<step>[.<i>].<attempt>.stdout|stderr
    logs/<step>[.<i>].<attempt>.proc.json      the supervisor's record: pid, start, outcome
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


def label(step: str, index: int) -> str:
    return step if index < 0 else f"{step}.{index}"


@dataclass(frozen=True, slots=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, data_dir: Path, run_id: str) -> RunDir:
        return cls((data_dir / "runs" / run_id).absolute())

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def input_dir(self, name: str) -> Path:
        return self.inputs / name

    def step_dir(self, step: str, index: int) -> Path:
        return self.work / label(step, index)

    def log(self, step: str, index: int, attempt: int, stream: str) -> Path:
        return self.logs / f"{label(step, index)}.{attempt}.{stream}"

    def record(self, step: str, index: int, attempt: int) -> Path:
        return self.logs / f"{label(step, index)}.{attempt}.proc.json"

    def create(self) -> None:
        """What a starting run needs (inputs/ appears with the first staged file, work/
        with the first step)."""
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
