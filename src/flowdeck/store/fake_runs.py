"""The in-memory store's run operations (same contract as :mod:`sql_runs`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowdeck.domain.runs import (
    ACTIVE_STATES,
    Event,
    Product,
    Run,
    RunState,
    StagedFile,
    StepRecord,
)
from flowdeck.errors import AlreadyExists, NotFound
from flowdeck.store.base import REFERENCE_GONE, EventRow

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeRunsMixin:
    s: _State
    _events_added: Callable[[list[Event]], None]

    def add_run(self, run: Run) -> None:
        if run.owner_id not in self.s.users or (
            run.workflow_id is not None and run.workflow_id not in self.s.workflows
        ):
            raise NotFound(REFERENCE_GONE)
        if run.id in self.s.runs:
            raise AlreadyExists("the run exists")
        self.s.runs[run.id] = run

    def get_run(self, run_id: str) -> Run | None:
        return self.s.runs.get(run_id)

    def update_run(self, run_id: str, **changes: Any) -> Run:
        self.s.runs[run_id] = dataclasses.replace(self.s.runs[run_id], **changes)
        return self.s.runs[run_id]

    def delete_run(self, run_id: str) -> bool:
        self.s.steps = {k: v for k, v in self.s.steps.items() if k[0] != run_id}
        self.s.events = [
            e for e in self.s.events if not (e.subject_kind == "run" and e.subject_id == run_id)
        ]
        self.s.counters.pop(("run", run_id), None)
        self.s.products = {k: p for k, p in self.s.products.items() if p.run_id != run_id}
        self.s.staged = {k: f for k, f in self.s.staged.items() if k[0] != run_id}
        self.s.ports = {k: p for k, p in self.s.ports.items() if k[0] != run_id}
        self.s.records = {k: r for k, r in self.s.records.items() if k[0] != run_id}
        self.s.run_links.pop(run_id, None)
        self.s.cache = {k: e for k, e in self.s.cache.items() if k[0] != run_id}
        return self.s.runs.pop(run_id, None) is not None

    def list_runs(
        self,
        viewer_id: str | None,
        *,
        states: list[RunState] | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        after_id: str | None = None,
        newest_first: bool = True,
        limit: int = 50,
        search: str | None = None,
        order_by: str = "created",
    ) -> list[Run]:
        def key(r: Run) -> tuple[str, str]:
            field = {"workflow": r.workflow_ref, "state": r.state.value}.get(order_by, "")
            return (field, r.id)

        cut: tuple[str, str] | None = None
        if after_id is not None:
            cut = key(self.s.runs[after_id]) if after_id in self.s.runs else ("", after_id)
            if order_by not in ("workflow", "state"):
                cut = ("", after_id)
        needle = (search or "").lower()

        def found(r: Run) -> bool:
            return (
                needle in r.id.lower()
                or needle in r.workflow_ref.lower()
                or any(needle in t.lower() for t in r.tags)
            )

        def keep(r: Run) -> bool:
            name_version = r.workflow_ref.split("/", 1)[-1]
            return (
                viewer_id in (None, r.owner_id)
                and owner_id in (None, r.owner_id)
                and (not states or r.state in states)
                and (
                    workflow is None
                    or name_version == workflow
                    or name_version.split("@")[0] == workflow
                )
                and (tag is None or tag in r.tags)
                and (created_after is None or r.created_at >= created_after)
                and (created_before is None or r.created_at < created_before)
                and (cut is None or (key(r) < cut if newest_first else key(r) > cut))
                and (not needle or found(r))
            )

        rows = sorted((r for r in self.s.runs.values() if keep(r)), key=key, reverse=newest_first)
        return rows[:limit]

    def queued_runs(self, *, exclude_owners: list[str], unowned: bool) -> list[Run]:
        def keep(r: Run) -> bool:
            if r.owner_instance is None:
                return unowned
            return r.owner_instance not in exclude_owners

        return sorted(
            (r for r in self.s.runs.values() if r.state is RunState.QUEUED and keep(r)),
            key=lambda r: r.id,
        )

    def queued_owners(
        self, *, exclude_owners: list[str], unowned: bool
    ) -> set[tuple[str, str | None]]:
        runs = self.queued_runs(exclude_owners=exclude_owners, unowned=unowned)
        return {(r.owner_id, r.owner_instance) for r in runs}

    def _takeable(self, owner_id: str, instances: list[str], unowned: bool) -> list[Run]:
        return [
            r
            for r in self.s.runs.values()
            if r.owner_id == owner_id
            and r.state is RunState.QUEUED
            and (r.owner_instance in instances or (unowned and r.owner_instance is None))
        ]

    def next_queued_runs(
        self, owner_id: str, *, instances: list[str], unowned: bool, limit: int
    ) -> list[Run]:
        def key(r: Run) -> tuple[int, int, datetime, str]:
            return (-r.admin_priority, -r.priority, r.queued_at or r.created_at, r.id)

        return sorted(self._takeable(owner_id, instances, unowned), key=key)[:limit]

    def set_queued_waiting(
        self, owner_id: str, reason: str | None, *, instances: list[str], unowned: bool
    ) -> None:
        for r in self._takeable(owner_id, instances, unowned):
            self.s.runs[r.id] = dataclasses.replace(r, waiting=reason)

    def count_active_runs(
        self, *, workflow_id: str | None = None, owner_id: str | None = None
    ) -> int:
        return sum(
            1
            for r in self.s.runs.values()
            if r.state in ACTIVE_STATES
            and workflow_id in (None, r.workflow_id)
            and owner_id in (None, r.owner_id)
        )

    def save_step(self, step: StepRecord) -> None:
        self.s.steps[(step.run_id, step.name, step.index)] = step

    def list_steps(self, run_id: str) -> list[StepRecord]:
        return [v for k, v in sorted(self.s.steps.items()) if k[0] == run_id]

    def step_summary(self, run_id: str, limit: int = 100) -> tuple[dict[str, int], list[str]]:
        steps = self.list_steps(run_id)
        counts: dict[str, int] = {}
        for step in steps:
            counts[step.state.value] = counts.get(step.state.value, 0) + 1
        current = [s.label for s in steps if s.state.value in ("running", "paused")]
        return counts, current[:limit]

    def step_counts(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        wanted = set(run_ids)
        found: dict[str, dict[str, int]] = {}
        for (run_id, *_), step in self.s.steps.items():
            if run_id in wanted:
                counts = found.setdefault(run_id, {})
                counts[step.state.value] = counts.get(step.state.value, 0) + 1
        return found

    def delete_step(self, run_id: str, name: str, index: int) -> bool:
        return self.s.steps.pop((run_id, name, index), None) is not None

    def add_event(
        self,
        subject_kind: str,
        subject_id: str,
        type: str,
        at: datetime,
        actor: str | None,
        data: dict[str, Any],
    ) -> Event:
        return self.add_events([(subject_kind, subject_id, type, at, actor, data)])[0]

    def add_events(self, events: list[EventRow]) -> list[Event]:
        added = []
        for kind, sid, type_, at, actor, data in events:
            seq = self.s.counters.get((kind, sid), 0) + 1
            self.s.counters[(kind, sid)] = seq
            last = self.s.events[-1].id if self.s.events else 0
            subject = (
                self.s.runs.get(sid)
                if kind == "run"
                else self.s.graphs.get(sid)
                if kind == "graph"
                else None
            )
            owner = subject.owner_id if subject is not None else None
            event = Event(last + 1, kind, sid, seq, type_, at, actor, data, owner)
            self.s.events.append(event)
            added.append(event)
        self._events_added(added)
        return added

    def list_events(
        self,
        *,
        subject_kind: str | None = None,
        subject_id: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
        owner_id: str | None = None,
        types: list[str] | None = None,
        subject_ids: list[str] | None = None,
    ) -> list[Event]:
        matchers = [re.compile(".*".join(map(re.escape, p.split("*")))) for p in types or ()]
        rows = [
            e
            for e in self.s.events
            if subject_kind in (None, e.subject_kind)
            and subject_id in (None, e.subject_id)
            and (subject_ids is None or e.subject_id in subject_ids)
            and (after_id is None or e.id > after_id)
            and owner_id in (None, e.owner_id)
            and (not matchers or any(m.fullmatch(e.type) for m in matchers))
        ]
        return rows[:limit]

    def last_event_id(self) -> int:
        return self.s.events[-1].id if self.s.events else 0

    def add_product(self, product: Product) -> None:
        self.s.products[product.id] = product

    def list_products(self, run_id: str) -> list[Product]:
        return sorted(
            (p for p in self.s.products.values() if p.run_id == run_id), key=lambda p: p.name
        )

    def get_product(self, product_id: str) -> Product | None:
        return self.s.products.get(product_id)

    def put_staged_file(self, staged: StagedFile) -> None:
        self.s.staged[(staged.run_id, staged.input, staged.filename)] = staged

    def delete_staged_file(self, run_id: str, input: str, filename: str) -> bool:
        return self.s.staged.pop((run_id, input, filename), None) is not None

    def list_staged_files(self, run_id: str) -> list[StagedFile]:
        return sorted(
            (f for k, f in self.s.staged.items() if k[0] == run_id),
            key=lambda f: (f.input, f.created_at),
        )
