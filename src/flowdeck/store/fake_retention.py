"""The fake store's side of retention (as :mod:`sql_retention`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowdeck.domain.runs import TERMINAL_STATES, Run
from flowdeck.domain.webhooks import DeliveryState

if TYPE_CHECKING:
    from flowdeck.store.fake import _State

_FINISHED = {DeliveryState.SUCCEEDED, DeliveryState.FAILED}


class FakeRetentionMixin:
    s: _State

    def expired_runs(
        self, before: datetime, *, files_only: bool, limit: int | None = None
    ) -> list[Run]:
        found = sorted(
            (
                r
                for r in self.s.runs.values()
                if r.state in TERMINAL_STATES
                and r.finished_at is not None
                and r.finished_at < before
                and not r.keep
                and not (files_only and r.files_purged_at is not None)
            ),
            key=lambda r: (r.finished_at, r.id),
        )
        return found if limit is None else found[:limit]

    def mark_files_purged(self, run_ids: list[str], now: datetime) -> list[str]:
        ids = {
            run_id
            for run_id in run_ids
            if (run := self.s.runs.get(run_id)) is not None
            and run.state in TERMINAL_STATES
            and not run.keep
            and run.files_purged_at is None
        }
        self.s.products = {k: p for k, p in self.s.products.items() if p.run_id not in ids}
        self.s.staged = {k: f for k, f in self.s.staged.items() if k[0] not in ids}
        for run_id in ids:
            self.s.runs[run_id] = dataclasses.replace(self.s.runs[run_id], files_purged_at=now)
        return sorted(ids)

    def delete_runs(self, run_ids: list[str]) -> list[str]:
        done = []
        for run_id in sorted(set(run_ids)):
            run = self.s.runs.get(run_id)
            ended = run is not None and run.state in TERMINAL_STATES and not run.keep
            if ended and self.delete_run(run_id):  # type: ignore[attr-defined]
                done.append(run_id)
        return done

    def old_rows(self, kind: str, before: datetime, *, limit: int | None = None) -> list[Any]:
        keys: list[Any]
        if kind == "events":
            keys = [
                e.id
                for e in self.s.events
                if e.at < before
                and not (e.subject_kind == "run" and e.subject_id in self.s.runs)
                and not (e.subject_kind == "graph" and e.subject_id in self.s.graphs)
            ]
        elif kind == "deliveries":
            found = [
                d
                for d in self.s.deliveries.values()
                if d.state in _FINISHED and d.finished_at is not None and d.finished_at < before
            ]
            keys = [d.id for d in sorted(found, key=lambda d: d.id)]
        elif kind == "audit":
            keys = [a.id for a in self.s.audit if a.at < before]
        else:
            raise ValueError(f"no retention of {kind!r}")
        return keys if limit is None else keys[:limit]

    def delete_rows(self, kind: str, keys: list[Any]) -> int:
        gone = set(keys)
        if kind == "events":
            before = len(self.s.events)
            self.s.events = [e for e in self.s.events if e.id not in gone]
            return before - len(self.s.events)
        if kind == "deliveries":
            self.s.attempts = {k: a for k, a in self.s.attempts.items() if k[0] not in gone}
            found = gone & self.s.deliveries.keys()
            for key in found:
                del self.s.deliveries[key]
            return len(found)
        before = len(self.s.audit)
        self.s.audit = [a for a in self.s.audit if a.id not in gone]
        return before - len(self.s.audit)
