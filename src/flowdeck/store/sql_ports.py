"""The SQL store's stream ports: ports and their records."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from flowdeck.domain.ports import Direction, StreamPort, StreamRecord
from flowdeck.store import schema as t

_P = t.stream_ports.c
_R = t.stream_records.c


def _port(row: Any) -> StreamPort:
    m = row._mapping
    return StreamPort(
        m["run_id"], m["direction"], m["name"], m["length"], m["closed"], m["closed_at"]
    )


def _key(run_id: str, direction: str, name: str) -> list[sa.ColumnElement[bool]]:
    return [_P.run_id == run_id, _P.direction == direction, _P.name == name]


class SqlPortsMixin:
    conn: Connection
    dialect: str

    def get_port(self, run_id: str, direction: Direction, name: str) -> StreamPort | None:
        row = self.conn.execute(
            t.stream_ports.select().where(*_key(run_id, direction, name))
        ).first()
        return _port(row) if row is not None else None

    def list_ports(self, run_id: str) -> list[StreamPort]:
        rows = self.conn.execute(
            t.stream_ports.select().where(_P.run_id == run_id).order_by(_P.direction, _P.name)
        )
        return [_port(r) for r in rows]

    def _create_port(self, run_id: str, direction: Direction, name: str) -> None:
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(
            t.stream_ports
        )
        values = {"run_id": run_id, "direction": direction, "name": name}
        self.conn.execute(insert.values(**values, length=0, closed=False).on_conflict_do_nothing())

    def lock_port(self, run_id: str, direction: Direction, name: str) -> StreamPort:
        self._create_port(run_id, direction, name)
        query = t.stream_ports.select().where(*_key(run_id, direction, name))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return _port(self.conn.execute(query).one())

    def append_records(
        self, port: StreamPort, data: list[Any], at: datetime, attempt: int | None = None
    ) -> StreamPort:
        if not data:
            return port
        rows = [
            {
                "run_id": port.run_id,
                "direction": port.direction,
                "port": port.name,
                "offset": port.length + i,
                "attempt": attempt,
                "data": value,
                "at": at,
            }
            for i, value in enumerate(data)
        ]
        self.conn.execute(t.stream_records.insert(), rows)
        length = port.length + len(data)
        self.conn.execute(
            t.stream_ports.update()
            .where(*_key(port.run_id, port.direction, port.name))
            .values(length=length)
        )
        return dataclasses.replace(port, length=length)

    def close_port(self, run_id: str, direction: Direction, name: str, at: datetime) -> StreamPort:
        port = self.lock_port(run_id, direction, name)
        if port.closed:
            return port
        self.conn.execute(
            t.stream_ports.update()
            .where(*_key(run_id, direction, name))
            .values(closed=True, closed_at=at)
        )
        return dataclasses.replace(port, closed=True, closed_at=at)

    def read_records(
        self, run_id: str, direction: Direction, name: str, start: int, limit: int
    ) -> list[StreamRecord]:
        rows = self.conn.execute(
            sa.select(_R.offset, _R.data, _R.at, _R.attempt)
            .where(
                _R.run_id == run_id,
                _R.direction == direction,
                _R.port == name,
                _R.offset >= start,
            )
            .order_by(_R.offset)
            .limit(limit)
        )
        return [StreamRecord(r.offset, r.data, r.at, r.attempt) for r in rows]
