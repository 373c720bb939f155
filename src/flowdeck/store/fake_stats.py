"""The fake store's side of the operators' summaries (as :mod:`sql_stats`)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from flowdeck.domain.fairshare import decay
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import Product, RunState, StagedFile, StepState

if TYPE_CHECKING:
    from flowdeck.store.fake import _State

_STEPPING = {RunState.RUNNING, RunState.PAUSED, RunState.STOPPING}


class FakeStatsMixin:
    s: _State

    def count_runs_in(self, states: list[RunState]) -> dict[RunState, int]:
        return dict(Counter(r.state for r in self.s.runs.values() if r.state in states))

    def count_running_steps(self) -> int:
        return sum(
            1
            for step in self.s.steps.values()
            if step.state is StepState.RUNNING
            and (run := self.s.runs.get(step.run_id)) is not None
            and run.state in _STEPPING
        )

    def load_by_instance(self) -> dict[str | None, tuple[int, int]]:
        runs = Counter(r.owner_instance for r in self.s.runs.values() if r.active)
        steps = Counter(
            run.owner_instance
            for step in self.s.steps.values()
            if step.state is StepState.RUNNING
            and (run := self.s.runs.get(step.run_id)) is not None
            and run.state in _STEPPING
        )
        return {k: (runs.get(k, 0), steps.get(k, 0)) for k in runs.keys() | steps.keys()}

    def oldest_queued_at(self) -> datetime | None:
        times = [
            r.queued_at
            for r in self.s.runs.values()
            if r.state is RunState.QUEUED and r.queued_at is not None
        ]
        return min(times, default=None)

    # -- quotas and usage -------------------------------------------------------------------
    def get_quota(self, user_id: str) -> Quota | None:
        return self.s.quotas.get(user_id)

    def set_quota(self, user_id: str, quota: Quota, now: datetime) -> None:
        if quota.empty:
            self.s.quotas.pop(user_id, None)
        else:
            self.s.quotas[user_id] = quota

    def list_quotas(self) -> dict[str, Quota]:
        return dict(self.s.quotas)

    def add_usage(self, amounts: dict[str, float], now: datetime, half_life_s: float) -> None:
        for user, amount in amounts.items():
            if user not in self.s.users:
                continue
            value, at = self.s.usage.get(user, (0.0, now))
            value = decay(value, (now - at).total_seconds(), half_life_s) + amount
            self.s.usage[user] = (value, max(now, at))

    def list_usage(self) -> dict[str, tuple[float, datetime]]:
        return dict(self.s.usage)

    def stored_bytes_by_owner(self, owner_id: str | None = None) -> dict[str, int]:
        found: Counter[str] = Counter()
        files: list[Product | StagedFile] = [*self.s.products.values(), *self.s.staged.values()]
        for f in files:
            run = self.s.runs.get(f.run_id)
            in_place = isinstance(f, StagedFile) and f.source == "data_root"
            if run is not None and owner_id in (None, run.owner_id) and f.size and not in_place:
                found[run.owner_id] += f.size
        for wf in self.s.workflows.values():
            if owner_id in (None, wf.owner_id) and wf.archive_bytes:
                found[wf.owner_id] += wf.archive_bytes
        return dict(found)
