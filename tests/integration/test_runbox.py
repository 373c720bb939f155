"""A run's sandbox (executors/runbox.py) with real bubblewrap: a run's later steps start in
it through its launcher, each in its own process group and (as root) with its own uid,
limits and outcome, as a step in a bwrap of its own would."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.local import LocalExecutor, LocalProcess
from flowdeck.executors.runbox import BoxedProcess
from flowdeck.executors.sandbox import plan
from flowdeck.executors.wire import same_process_alive
from tests.integration.test_local_executor import gone

T = TypeVar("T")
UIDS = (920000, 920099)
ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


class Run:
    """One run's folders; its steps' launches."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.tmp = root / "tmp"
        self.work.mkdir(parents=True)
        self.tmp.mkdir()
        self.count = 0

    def launch(self, script: str, **kw: Any) -> Launch:
        self.count += 1
        cwd = self.work / f"s{self.count}"
        cwd.mkdir()
        kw.setdefault("max_processes", 64)
        spec = plan(
            ro=[self.work],
            rw=[cwd, self.tmp],
            grant=[],
            deny=[],
            network=False,
            step_user="flowdeck-step",
            step_uids=UIDS,
            max_processes=kw["max_processes"],
            work=self.work,
            box=True,
        )
        return Launch(
            key=f"run/s{self.count}/0/1",
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin"},
            stdout=cwd / "out",
            stderr=cwd / "err",
            argv=kw.pop("argv", ("/bin/sh", "-c", script)),
            sandbox=spec,
            **kw,
        )


class Step:
    def __init__(self, ex: LocalExecutor, launch: Launch) -> None:
        loop = asyncio.get_running_loop()
        self.launch = launch
        self.done: asyncio.Future[Outcome] = loop.create_future()
        self.proc: StepProcess = ex.start(launch, self._exit, loop)

    def _exit(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)

    async def outcome(self, within: float = 20) -> Outcome:
        return await asyncio.wait_for(asyncio.shield(self.done), within)

    @property
    def out(self) -> str:
        return self.launch.stdout.read_text()


def run(main: Callable[[LocalExecutor], Awaitable[T]]) -> T:
    ex = LocalExecutor()

    async def wrapper() -> T:
        try:
            return await main(ex)
        finally:
            ex.close()

    return asyncio.run(wrapper())


async def until(check: Callable[[], bool], within: float = 10) -> None:
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def proc_state(pid: int | None) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def boxed(ex: LocalExecutor, r: Run) -> None:
    """Start steps of the run until one starts in its sandbox (the first starts it)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        step = Step(ex, r.launch("true"))
        assert (await step.outcome()).exit_code == 0
        if isinstance(step.proc, BoxedProcess):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the run's sandbox never became ready")


def test_later_steps_start_in_the_runs_sandbox_as_steps_of_their_own(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        first = Step(ex, r.launch("echo first"))
        assert isinstance(first.proc, LocalProcess)  # the run's sandbox is not up yet
        assert (await first.outcome()).exit_code == 0
        await boxed(ex, r)
        # each step: its own process group and session, pid 1 is the run's bwrap
        script = 'echo "$$ $(ps -o pgid= -p $$) $(ps -o sid= -p $$)"; exit 3'
        steps = [Step(ex, r.launch(script)) for _ in range(3)]
        outcomes = [await s.outcome() for s in steps]
        assert [o.exit_code for o in outcomes] == [3, 3, 3]
        assert all(isinstance(s.proc, BoxedProcess) for s in steps)
        for s in steps:
            pid, pgid, sid = s.out.split()
            assert pid == pgid == sid  # a group and session of its own
            assert s.proc.pid is not None and s.proc.pid != int(pid)  # the host's pid
        # the same sandbox: pid 1 inside is the run's one bwrap, launcher beside it
        probe = Step(ex, r.launch("tr '\\0' ' ' < /proc/1/cmdline; ls /proc | grep -c '^[0-9]'"))
        assert (await probe.outcome()).exit_code == 0
        assert "launcher.py" in probe.out

    run(main)


@pytest.mark.skipif(not ROOT, reason="a uid of its own per attempt needs a root server")
def test_each_boxed_step_has_its_own_uid_and_writes_only_its_folders(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await boxed(ex, r)
        script = (
            f"id -u; id -G; touch ok.txt tmpok; cp ok.txt {r.tmp}/mine;"
            "touch ../s1/theirs 2>/dev/null && echo WROTE-OTHER;"
            "touch ../newfile 2>/dev/null && echo WROTE-WORK;"
            "kill -0 1 2>/dev/null && echo SIGNALLED-INIT;"
            "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"
        )
        a, b = Step(ex, r.launch(script + "; sleep 0.3")), Step(ex, r.launch(script))
        for s in (a, b):
            assert (await s.outcome()).exit_code == 0, s.launch.stderr.read_text()
        ua, ub = int(a.out.split()[0]), int(b.out.split()[0])
        assert UIDS[0] <= ua <= UIDS[1] and UIDS[0] <= ub <= UIDS[1] and ua != ub
        for s in (a, b):
            assert "WROTE" not in s.out and "SIGNALLED" not in s.out
            assert "CapEff:\t0000000000000000" in s.out
            assert "NoNewPrivs:\t1" in s.out
            assert (s.launch.cwd / "ok.txt").exists()
            # its folder is given back to the server, readable for the run's later steps
            assert (s.launch.cwd / "ok.txt").stat().st_uid == os.getuid()
        assert not (r.work / "newfile").exists()

    run(main)


def test_boxed_steps_are_signalled_timed_and_limited_as_their_group(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await boxed(ex, r)
        # kill: the step and its child go, the outcome says SIGKILL
        s = Step(ex, r.launch("sleep 60 & echo $!; wait"))
        await until(lambda: s.proc.pid is not None and bool(s.launch.stdout.read_text()))
        assert same_process_alive(s.proc.pid, s.proc.start_time)
        s.proc.pause()
        await asyncio.sleep(0.1)
        assert proc_state(s.proc.pid) == "T"  # frozen
        s.proc.resume()
        leader = s.proc.pid
        s.proc.kill()
        o = await s.outcome()
        assert o.exit_code is None and o.signal == signal.SIGKILL
        assert gone(leader)
        # a kill asked before the launcher said it started still kills it
        early = Step(ex, r.launch("sleep 60"))
        early.proc.kill()
        assert (await early.outcome()).signal == signal.SIGKILL
        # walltime
        slow = Step(ex, r.launch("sleep 60", walltime_s=0.3))
        o = await slow.outcome()
        assert o.timed_out and o.signal == signal.SIGKILL
        # limits are the step's (not the launcher's)
        script = "grep -E '^Max (processes|file size)' /proc/self/limits"
        lim = Step(ex, r.launch(script, max_processes=77, file_size_bytes=1 << 20))
        assert (await lim.outcome()).exit_code == 0
        limits = {line[:20].strip(): line[20:].split()[:2] for line in lim.out.splitlines()}
        assert limits == {"Max file size": ["1048576"] * 2, "Max processes": ["77"] * 2}
        # resource usage of its own
        busy = Step(ex, r.launch("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"))
        o = await busy.outcome()
        assert o.exit_code == 0 and o.cpu_time_s > 0.05 and o.max_rss_kb > 0

    run(main)


def test_a_boxed_step_that_cannot_start_says_why(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await boxed(ex, r)
        s = Step(ex, r.launch("", argv=("no-such-program-x", "a")))
        o = await s.outcome()
        assert isinstance(s.proc, BoxedProcess)
        assert o.exit_code == 127
        assert o.error == "cannot start 'no-such-program-x': No such file or directory"

    run(main)


def test_steps_of_a_killed_run_sandbox_are_lost_and_gone(tmp_path: Path) -> None:
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await boxed(ex, r)
        s = Step(ex, r.launch("sleep 60 & wait"))
        await until(lambda: s.proc.pid is not None)
        leader = s.proc.pid
        (box,) = ex._boxes._boxes.values()
        os.killpg(box.popen.pid, signal.SIGKILL)
        o = await s.outcome()
        assert o.lost and o.error is not None and "sandbox ended" in o.error
        assert gone(leader)
        # the next step gets a sandbox again
        after = Step(ex, r.launch("echo again"))
        assert (await after.outcome()).exit_code == 0 and after.out == "again\n"

    run(main)


def test_an_idle_run_sandbox_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowdeck.executors.runbox.IDLE_S", 0.2)
    r = Run(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await boxed(ex, r)
        (box,) = ex._boxes._boxes.values()
        bwrap = box.popen.pid
        await until(lambda: not ex._boxes._boxes)
        assert not ex._boxes._boxes
        assert gone(bwrap)

    run(main)
