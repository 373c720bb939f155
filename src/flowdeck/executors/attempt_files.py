"""The files a cluster executor (Slurm, Dask) keeps beside an attempt's logs, in the shared
run folder: ``logs/<label>.<attempt>.<kind>.<what>``.  Each executor names its ``kind``
and the files it keeps (``SUFFIXES``); how an attempt ended is in its ``exit`` file, a JSON
object written whole (temporary file, then renamed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class AttemptFiles:
    base: Path  # logs/<label>.<attempt>

    KIND: ClassVar[str] = ""
    SUFFIXES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, stdout: Path) -> AttemptFiles:
        return cls(stdout.with_suffix(""))

    def path(self, what: str) -> Path:
        assert what in self.SUFFIXES, what
        return self.base.with_name(f"{self.base.name}.{self.KIND}.{what}")

    def read(self, what: str) -> str | None:
        """The file's text, stripped (None: it is not there)."""
        try:
            return self.path(what).read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def exit_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path("exit").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
