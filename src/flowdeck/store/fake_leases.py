"""The in-memory store's server instances, leases and fences (as :mod:`sql_leases`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING

from flowdeck.domain.leases import ServerInstance

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeLeasesMixin:
    s: _State

    def add_instance(self, instance: ServerInstance) -> None:
        self.s.instances[instance.id] = instance

    def heartbeat(
        self,
        instance_id: str,
        now: datetime,
        holdings: dict[str, list[float]] | None = None,
    ) -> bool:
        inst = self.s.instances.get(instance_id)
        if inst is None or inst.stopped_at is not None:
            return False
        mine = inst.holdings if holdings is None else holdings
        self.s.instances[instance_id] = dataclasses.replace(inst, heartbeat_at=now, holdings=mine)
        return True

    def stop_instance(self, instance_id: str, now: datetime) -> None:
        inst = self.s.instances.get(instance_id)
        if inst is not None:
            self.s.instances[instance_id] = dataclasses.replace(inst, stopped_at=now)

    def mark_commit(self, instance_id: str, seq: int) -> None:
        self.s.commit_marks[instance_id] = seq

    def commit_mark(self, instance_id: str) -> int:
        return self.s.commit_marks.get(instance_id, 0)

    def list_instances(self) -> list[ServerInstance]:
        return sorted(self.s.instances.values(), key=lambda i: i.started_at)

    def claim_run(self, run_id: str, instance_id: str, fence: int) -> int | None:
        run = self.s.runs.get(run_id)
        if run is None or run.fence != fence:
            return None
        self.s.runs[run_id] = dataclasses.replace(run, owner_instance=instance_id, fence=fence + 1)
        return fence + 1

    def run_fences(self, run_ids: list[str]) -> dict[str, tuple[str | None, int]]:
        return {
            i: (self.s.runs[i].owner_instance, self.s.runs[i].fence)
            for i in run_ids
            if i in self.s.runs
        }
