"""The step supervisor's wire format: JSON lines over a Unix socket, and the records it
keeps in each run directory.

Server → supervisor::

    {"op": "hello"}                   → {"op": "state", "pid", "running": [{key, pid, ...}]}
    {"op": "start", "launch": {...}}  → {"op": "started", "key", "pid", "start_time"}, or
                                        "exited" at once when it cannot start
    {"op": "adopt", "key"}            exits of key go to this connection; → "exited" now if
                                        it ended while no server listened, "unknown" if the
                                        supervisor never ran it (it restarted meanwhile)
    {"op": "ack", "key"}              an adopted exit is committed: forget it
    {"op": "signal", "key", "action"} pause | resume | terminate | kill

Supervisor → server, to the connection that started or adopted the attempt, when it ends::

    {"op": "exited", "key", "outcome": {...}}

A record file per attempt (``Launch.record``) holds ``{key, pid, start_time,
started_at}`` once started and gains ``outcome`` when the attempt ends; it is replaced
atomically (written to a temporary name, then renamed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Launch, Outcome

_PATHS = ("cwd", "stdout", "stderr", "code_dir", "stdin", "record")


_FIELDS = tuple(f.name for f in dataclasses.fields(Launch))


def launch_to_wire(launch: Launch) -> dict[str, Any]:
    data = {name: getattr(launch, name) for name in _FIELDS}  # shallow: JSON copies it
    for name in _PATHS:
        if data.get(name) is not None:
            data[name] = str(data[name])
    data["argv"] = list(launch.argv)
    return data


def launch_from_wire(data: dict[str, Any]) -> Launch:
    values = dict(data)
    for name in _PATHS:
        if values.get(name) is not None:
            values[name] = Path(values[name])
    values["argv"] = tuple(values.get("argv") or ())
    return Launch(**values)


def outcome_to_wire(outcome: Outcome) -> dict[str, Any]:
    return dataclasses.asdict(outcome)


def outcome_from_wire(data: dict[str, Any]) -> Outcome:
    fields = {f.name for f in dataclasses.fields(Outcome)}
    return Outcome(**{k: v for k, v in data.items() if k in fields})


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Replace the record atomically (a reader sees the old or the new one, whole)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat): with
    the pid, it names one process for good — a reused pid has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def same_process_alive(pid: int, start_time: int | None) -> bool:
    """Is the process that had ``pid`` and ``start_time`` still there (and not a zombie)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (start_time is None or int(fields[19]) == start_time)
