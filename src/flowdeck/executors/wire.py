"""The step supervisor's wire format: JSON lines over a Unix socket, and the records it
keeps in each run directory.

Server → supervisor::

    {"op": "hello", "protocol"}       → {"op": "state", "pid", "protocol",
                                         "running": [{key, pid, ...}]}
    {"op": "start", "launch": {...}}  → {"op": "started", "key", "pid", "start_time"}, or
                                        "exited" at once when it cannot start
    {"op": "adopt", "key"}            exits of key go to this connection; → "exited" now if
                                        it ended while no server listened, "unknown" if the
                                        supervisor never ran it (it restarted meanwhile)
    {"op": "ack", "key"}              an adopted exit is committed: forget it
    {"op": "signal", "key", "action"} pause | resume | terminate | kill

Supervisor → server, to the connection that started or adopted the attempt, when it ends::

    {"op": "exited", "key", "outcome": {...}}

**Versions.** ``PROTOCOL`` is the version of these messages and of the launch they carry
(the fields of ``Launch``); it goes up with any change to either.  A supervisor of a
version before it was said answers hello without ``protocol``: version 0, whose messages
are those of version 1.  A server drives a supervisor of a version in ``SPOKEN`` (it
adopts its steps and starts new ones through it); any other one it asks to exit
(SIGTERM) and starts its own: the steps the old one ran are then unknown to the new one,
killed by their journal and retried as lost steps are (docs/operations.md, Upgrades).

Each run has an attempt journal (``Launch.record``: ``logs/attempts.jsonl``): the supervisor
appends ``{key, pid, start_time, started_at}`` when an attempt starts and the same with
``outcome`` when it ends, one JSON line per write; an attempt's record is its last line.
Appending creates no file per attempt (creating files is what costs on slow or network
file systems); a line cut short by a crash is skipped by readers and ended by the next
writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Launch, Outcome

_PATHS = ("cwd", "stdout", "stderr", "code_dir", "stdin", "record")
PROTOCOL = 1
SPOKEN = frozenset({0, 1})  # 0: said nothing (the same messages as 1)


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


def append_record(journal: Path, record: dict[str, Any]) -> None:
    """Append an attempt's record (it names its ``key``) to a run's journal, in one write."""
    line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    fd = os.open(journal, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a write cut short by a crash
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


def read_records(journal: Path) -> dict[str, dict[str, Any]]:
    """Every attempt's last record in a run's journal, by key."""
    try:
        data = journal.read_bytes()
    except OSError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # cut short by a crash
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            found[record["key"]] = record
    return found


def read_record(journal: Path, key: str) -> dict[str, Any] | None:
    """One attempt's last record, or None."""
    return read_records(journal).get(key)


_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def boottime_ticks() -> int:
    """Now, in the unit of a process's start time in /proc/pid/stat: clock ticks since boot
    (CLOCK_BOOTTIME, as the kernel counts it there, time namespaces included)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _NS_PER_TICK


def spawned_start_time(pid: int, before: int, after: int) -> int | None:
    """The start time of a child forked between two :func:`boottime_ticks` readings.

    A process's start time is the tick of its fork.  When both readings fall in one tick (a
    spawn takes well under one: ~99 % of spawns here) that is it, with no read of
    /proc/pid/stat — which, right after a spawn, waits while the child's exec maps its
    program (70-230 µs here, in the supervisor's one loop).  Otherwise it is read."""
    return before if before == after else process_start_time(pid)


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


def group_alive(pgid: int) -> bool:
    """Is any process of the group ``pgid`` still there (and not a zombie)?"""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def kill_group(pid: int, start_time: int | None, wait_s: float = 2.0) -> None:
    """SIGKILL the process group led by ``pid`` if that is still the process that started
    at ``start_time`` (a pid can be reused), and wait (``wait_s`` at most) until its
    leader, then every other process of the group, is gone: what comes next may rely on
    it (a busy machine may take a moment to end each)."""
    if not same_process_alive(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while same_process_alive(pid, start_time) and time.monotonic() < deadline:
        time.sleep(0.002)
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.002)


def kill_helpers(record: dict[str, Any]) -> None:
    """SIGKILL the processes an attempt's record names besides its group (``helpers``:
    [pid, start time] pairs, such as the ``pasta`` of a networked sandbox, which runs in a
    session of its own), each if it is still the process that started then."""
    helpers = record.get("helpers")
    for pair in helpers if isinstance(helpers, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int):
            start = pair[1] if isinstance(pair[1], int) else None
            if same_process_alive(pair[0], start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pair[0], signal.SIGKILL)
