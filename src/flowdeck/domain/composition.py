"""Links between runs (a sub-workflow's child run, a rerun and the run it reruns) and the
step cache that lets a rerun reuse what did not change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RERUN_TAG = "rerun:"  # a rerun's tag: "rerun:<the run it reruns>"
CHILD = "child"  # run_id runs the `uses:` step `step` (instance `index`) of parent_id
RERUN = "rerun"  # run_id reruns parent_id; step is the forced `from_step`, if any


@dataclass(frozen=True, slots=True)
class RunLink:
    run_id: str
    kind: str
    parent_id: str
    step: str | None = None
    index: int = -1


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """The outputs a step instance produced (or reused) under a cache key."""

    run_id: str
    step: str
    index: int
    key: str
    owner_id: str
    workflow_id: str | None
    created_at: datetime
    outputs: dict[str, Any] = field(default_factory=dict)
