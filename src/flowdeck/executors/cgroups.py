"""A cgroup v2 of its own for each local step attempt, where this process may make them.

Where a cgroup v2 hierarchy is mounted and this process may write to its own cgroup there
(root, or a subtree delegated to it, e.g. systemd's ``Delegate=yes``), each attempt gets a
cgroup under ``<own cgroup>/flowdeck-<tag>/``; the step joins it before its exec, so all
its processes — also those that leave its process group — are in it:

- when the step's first process ends, ``cgroup.kill`` ends whatever is left of it;
- its CPU time counts every process of it (``cpu.stat``), reaped or orphaned;
- with the ``memory`` and ``pids`` controllers available to the subtree, ``memory.max``
  and ``pids.max`` bound the whole attempt (an OOM kill is reported as such); without
  them (a cgroup v1 host, whose unified hierarchy has no controllers) the rlimits alone
  bound each process.

Nothing here is required: without a usable hierarchy steps run as before, and
``flowdeck admin status`` says which applies (:func:`describe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("flowdeck.executors")
WANTED = ("memory", "pids")


def _mount(mounts: str) -> Path | None:
    try:
        with open(mounts, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        return None
    return None


def _own(cgroup_file: str) -> str | None:
    try:
        with open(cgroup_file, encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _write(path: Path, text: str) -> bool:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
    except OSError:
        return False
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError:
        return ""


def _keyed(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


@dataclass
class AttemptGroup:
    """One attempt's cgroup."""

    path: Path
    memory_max: int | None = None

    def procs_fd(self) -> int:
        """A descriptor the step writes ``0`` to, to join (opened here, with our rights)."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def kill(self) -> None:
        _write(self.path / "cgroup.kill", "1")

    def cpu_s(self) -> float | None:
        text = _read(self.path / "cpu.stat")
        return _keyed(text, "usage_usec") / 1e6 if text else None

    def oom_killed(self) -> bool:
        return _keyed(_read(self.path / "memory.events"), "oom_kill") > 0

    def empty(self) -> bool:
        return _keyed(_read(self.path / "cgroup.events"), "populated") == 0

    def remove(self) -> bool:
        """Kill what is left and remove it; False while processes are still leaving."""
        self.kill()
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class Cgroups:
    """The attempts' cgroups under this process's own cgroup."""

    def __init__(self, base: Path, controllers: frozenset[str]) -> None:
        self.base = base
        self.controllers = controllers

    @classmethod
    def find(
        cls, tag: str, mounts: str = "/proc/self/mounts", cgroup_file: str = "/proc/self/cgroup"
    ) -> Cgroups | None:
        """Set up ``flowdeck-<tag>`` under our cgroup (killing attempts a dead predecessor
        left there); None where there is no cgroup v2 we may write to."""
        mount, own = _mount(mounts), _own(cgroup_file)
        if mount is None or own is None:
            return None
        parent = mount / own.lstrip("/")
        base = parent / f"flowdeck-{tag}"
        try:
            base.mkdir(exist_ok=True)
        except OSError:
            return None
        if not os.access(base / "cgroup.procs", os.W_OK):
            return None
        for stale in base.iterdir():  # attempts of a supervisor that died
            if stale.is_dir():
                AttemptGroup(stale).remove()
        wanted = [c for c in WANTED if c in _read(parent / "cgroup.controllers").split()]
        for c in wanted:
            _write(parent / "cgroup.subtree_control", f"+{c}")
            _write(base / "cgroup.subtree_control", f"+{c}")
        enabled = frozenset(_read(base / "cgroup.subtree_control").split()) & set(WANTED)
        return cls(base, enabled)

    def close(self, wait_s: float = 2.0) -> None:
        """End every attempt's cgroup left (their processes are killed) and our own."""
        deadline = time.monotonic() + wait_s
        for child in [p for p in self.base.iterdir() if p.is_dir()]:
            while not AttemptGroup(child).remove() and time.monotonic() < deadline:
                time.sleep(0.01)
        with contextlib.suppress(OSError):
            self.base.rmdir()

    def attempt(
        self, key: str, memory_bytes: int | None, max_processes: int | None
    ) -> AttemptGroup | None:
        name = hashlib.sha256(key.encode()).hexdigest()[:20]
        group = AttemptGroup(self.base / name)
        if group.path.exists():
            group.remove()
        try:
            group.path.mkdir()
        except OSError as exc:
            log.warning("no cgroup for attempt %s: %s", key, exc)
            return None
        if memory_bytes is not None and "memory" in self.controllers:
            _write(group.path / "memory.max", str(memory_bytes))
            _write(group.path / "memory.swap.max", "0")
            group.memory_max = memory_bytes
        if max_processes is not None and "pids" in self.controllers:
            _write(group.path / "pids.max", str(max_processes))
        return group


def describe(step_uids: str, enabled: bool = True, mounts: str = "/proc/self/mounts") -> str:
    """What bounds a step's resources on this host, in words (``enabled``: the setting
    step_cgroups is auto)."""
    per = "per attempt uid" if os.geteuid() == 0 and step_uids.strip() else "per user"
    text = f"rlimits: CPU time, address space, file size, processes ({per})"
    if not enabled:
        return text + "; no cgroups (step_cgroups = off)"
    mount, own = _mount(mounts), _own("/proc/self/cgroup")
    if mount is None or own is None:
        return text + "; no cgroup v2 here"
    parent = mount / own.lstrip("/")
    if not os.access(parent, os.W_OK):
        return text + f"; cgroup v2 at {mount} not delegated to this user"
    have = [c for c in WANTED if c in _read(parent / "cgroup.controllers").split()]
    bound = (
        f"its {' and '.join(have)} bounded" if have else "no memory or pids controller to bound it"
    )
    return text + f"; a cgroup v2 per attempt (at {mount}): its processes killed together, {bound}"
