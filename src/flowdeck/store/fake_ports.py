"""The in-memory store's stream ports (same contract as :mod:`sql_ports`)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowdeck.domain.ports import Direction, StreamPort, StreamRecord
from flowdeck.errors import NotFound
from flowdeck.store.base import REFERENCE_GONE

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakePortsMixin:
    s: _State

    def get_port(self, run_id: str, direction: Direction, name: str) -> StreamPort | None:
        return self.s.ports.get((run_id, direction, name))

    def list_ports(self, run_id: str) -> list[StreamPort]:
        found = [p for key, p in self.s.ports.items() if key[0] == run_id]
        return sorted(found, key=lambda p: (p.direction, p.name))

    def lock_port(self, run_id: str, direction: Direction, name: str) -> StreamPort:
        if run_id not in self.s.runs:
            raise NotFound(REFERENCE_GONE)
        key = (run_id, direction, name)
        if key not in self.s.ports:
            self.s.ports[key] = StreamPort(run_id, direction, name)
            self.s.records[key] = []
        return self.s.ports[key]

    def append_records(
        self, port: StreamPort, data: list[Any], at: datetime, attempt: int | None = None
    ) -> StreamPort:
        key = (port.run_id, port.direction, port.name)
        records = self.s.records[key]
        for value in data:
            records.append(StreamRecord(len(records), copy.deepcopy(value), at, attempt))
        new = dataclasses.replace(self.s.ports[key], length=len(records))
        self.s.ports[key] = new
        return new

    def close_port(self, run_id: str, direction: Direction, name: str, at: datetime) -> StreamPort:
        port = self.lock_port(run_id, direction, name)
        if not port.closed:
            port = dataclasses.replace(port, closed=True, closed_at=at)
            self.s.ports[(run_id, direction, name)] = port
        return port

    def read_records(
        self, run_id: str, direction: Direction, name: str, start: int, limit: int
    ) -> list[StreamRecord]:
        records = self.s.records.get((run_id, direction, name), [])
        return records[start : start + limit]
