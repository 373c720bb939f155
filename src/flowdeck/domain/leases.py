"""Ownership of active runs: each server instance holds a heartbeat lease in the store and
owns the active runs it started or took over.  Every change the scheduler commits for a run
is fenced by (owner instance, fence): a takeover increments the fence, so a stale owner's
late writes are rejected instead of overwriting the new owner's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServerInstance:
    id: str
    host: str
    pid: int
    pid_start: int | None  # the process's start time (clock ticks since boot)
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    # What its users hold on it, as of its last heartbeat, where quotas apply: user id ->
    # [active runs, CPU slots of running steps] (the other servers add it to their own)
    holdings: dict[str, list[float]] = field(default_factory=dict)

    def lease_valid(self, now: datetime, ttl_s: float, host: str) -> bool:
        """Does this instance still own its runs, as seen from ``host`` at ``now``?

        A lease ends when the instance stopped, when its heartbeat is older than the
        lease, or — seen from the same host — at once when its process is gone."""
        if self.stopped_at is not None:
            return False
        if now - self.heartbeat_at > timedelta(seconds=ttl_s):
            return False
        return not (host == self.host and not _alive(self.pid, self.pid_start))


def _alive(pid: int, start: int | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] not in ("Z", "X") and (start is None or int(fields[19]) == start)
