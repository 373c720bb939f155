"""A cgroup v2 per attempt on this host's real hierarchy (here the unified one of a cgroup
v1 host: no controllers, but cgroup.procs, cgroup.kill, cpu.stat): a step's processes that
leave its process group still end with it, and its CPU time counts all of them — for a
step on its own, in a bwrap of its own, and in its run's sandbox."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from flowdeck.executors.cgroups import Cgroups
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.runbox import BoxedProcess
from tests.integration.test_local_executor import gone
from tests.integration.test_runbox import Run, Step, boxed, until

ESCAPE = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!; cat /proc/self/cgroup"


def find() -> Cgroups:
    found = Cgroups.find(f"test-{uuid.uuid4().hex[:8]}")
    if found is None:
        pytest.skip("needs a cgroup v2 hierarchy this user may write to")
    return found


def sleeper_in(group: Path) -> int | None:
    """The host pid of the step's escaped sleeper: the one ``sleep`` in its cgroup."""
    for pid in (group / "cgroup.procs").read_text().split():
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
            return int(pid)
    return None


@pytest.mark.parametrize("where", ["bare", "own-bwrap", "run-sandbox"])
def test_what_leaves_the_steps_group_ends_with_it(tmp_path: Path, where: str) -> None:
    if where != "bare" and shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    cgroups = find()
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        if where == "run-sandbox":
            await boxed(ex, r)
        launch = r.launch(ESCAPE + "; sleep 0.3")
        if where == "bare":
            launch = replace(launch, sandbox=None)
        step = Step(ex, launch)
        await until(lambda: bool(launch.stdout.read_text().strip()))
        assert isinstance(step.proc, BoxedProcess) == (where == "run-sandbox")
        group = step.proc.cgroup  # type: ignore[attr-defined]
        assert group is not None and group.path.parent == cgroups.base
        await until(lambda: sleeper_in(group.path) is not None)  # out of the step's group
        sleeper = sleeper_in(group.path)
        assert sleeper is not None
        o = await step.outcome()
        assert o.exit_code == 0
        assert gone(sleeper)
        await until(lambda: not group.path.exists())  # removed once its processes are gone

    ex = LocalExecutor(cgroups)
    try:
        asyncio.run(_with(ex, main))
    finally:
        cgroups.close()


async def _with(ex: LocalExecutor, main: Callable[[LocalExecutor], Awaitable[None]]) -> None:
    try:
        await main(ex)
    finally:
        ex.close()


def test_a_steps_cpu_time_counts_the_children_it_did_not_wait_for(tmp_path: Path) -> None:
    cgroups = find()
    r = Run(tmp_path)
    # the busy child is not waited for: the leader's rusage does not have it, its cgroup does
    script = "sh -c 'while :; do :; done' & sleep 0.6"

    async def main(ex: LocalExecutor) -> None:
        launch = r.launch(script)
        launch = replace(launch, sandbox=None)
        t0 = time.monotonic()
        o = await Step(ex, launch).outcome()
        assert o.exit_code == 0 and time.monotonic() - t0 < 5
        assert o.cpu_time_s > 0.15, o  # the leader alone: a few ms

    ex = LocalExecutor(cgroups)
    try:
        asyncio.run(_with(ex, main))
    finally:
        cgroups.close()


def test_a_new_supervisor_ends_what_a_dead_one_left_in_its_cgroups(tmp_path: Path) -> None:
    first = find()
    left = first.attempt("run/s/0/1", None, None)
    assert left is not None
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (left.path / "cgroup.procs").write_text(str(orphan.pid))
    tag = first.base.name.removeprefix("flowdeck-")
    again = Cgroups.find(tag)
    assert again is not None
    orphan.wait(5)  # killed by cgroup.kill
    assert not left.path.exists() or left.empty()
    again.close()
    assert not again.base.exists()
