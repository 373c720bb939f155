"""LocalExecutor with real processes: exits, files, limits, signals to the process group."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.wire import process_start_time, same_process_alive

T = TypeVar("T")
ENV = {"PATH": os.environ.get("PATH", os.defpath)}


def make(tmp_path: Path, *argv: str, **kw: Any) -> Launch:
    kw.setdefault("env", dict(ENV))
    kw.setdefault("cwd", tmp_path)
    kw.setdefault("stdout", tmp_path / "out.txt")
    kw.setdefault("stderr", tmp_path / "err.txt")
    return Launch(key=kw.pop("key", "run/step/0/1"), argv=argv, **kw)


class Started:
    """One attempt started in the running loop; ``done`` resolves with its outcome."""

    def __init__(self, executor: LocalExecutor, launch: Launch) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[Outcome] = loop.create_future()
        self.calls = 0
        self.proc: StepProcess = executor.start(launch, self._on_exit, loop)

    def _on_exit(self, outcome: Outcome) -> None:
        self.calls += 1
        if not self.done.done():
            self.done.set_result(outcome)

    async def outcome(self, within: float = 10) -> Outcome:
        try:
            return await asyncio.wait_for(asyncio.shield(self.done), within)
        except BaseException:
            self.proc.kill()
            await asyncio.wait_for(self.done, 5)
            raise


def run(main: Callable[[LocalExecutor], Awaitable[T]]) -> T:
    executor = LocalExecutor()

    async def wrapper() -> T:
        return await main(executor)

    try:
        return asyncio.run(wrapper())
    finally:
        executor.close()


def run_one(launch: Launch) -> Outcome:
    async def main(ex: LocalExecutor) -> Outcome:
        return await Started(ex, launch).outcome()

    return run(main)


def gone(pid: int, within: float = 3.0) -> bool:
    """The process no longer exists, or is a zombie (a container's init may not reap it)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def read_line(path: Path) -> str | None:
    text = path.read_text() if path.exists() else ""
    return text if text.endswith("\n") else None


async def wait_for_line(path: Path, within: float = 5) -> str:
    deadline = time.monotonic() + within
    while (text := read_line(path)) is None:
        assert time.monotonic() < deadline, f"{path} never written"
        await asyncio.sleep(0.01)
    return text


def test_exit_codes_and_output_files(tmp_path: Path) -> None:
    assert run_one(make(tmp_path, "/bin/true")).exit_code == 0
    outcome = run_one(make(tmp_path, "sh", "-c", "echo out; echo err >&2; exit 3"))
    assert outcome.exit_code == 3
    assert outcome.signal is None
    assert not outcome.ok
    assert (tmp_path / "out.txt").read_text() == "out\n"
    assert (tmp_path / "err.txt").read_text() == "err\n"


def test_env_is_exactly_the_given_one(tmp_path: Path) -> None:
    env = {"PATH": ENV["PATH"], "FLOWDECK_TEST_VAR": "a b=c"}
    assert run_one(make(tmp_path, "env", env=env)).ok
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"{k}={v}" for k, v in env.items())


def test_cwd_and_stdin(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "in.txt").write_text("fed\n")
    launch = make(tmp_path, "sh", "-c", "pwd; cat", cwd=work, stdin=tmp_path / "in.txt")
    assert run_one(launch).ok
    where, fed = (tmp_path / "out.txt").read_text().splitlines()
    assert os.path.realpath(where) == os.path.realpath(work)
    assert fed == "fed"
    assert run_one(make(tmp_path, "cat")).ok  # no stdin given: /dev/null, not ours
    assert (tmp_path / "out.txt").read_text() == ""


# a step with limits is started through dash (``group.setup_argv``): its errors must read
# as those of a step started directly
@pytest.mark.parametrize("limits", [{}, {"file_size_bytes": 1 << 20}], ids=["direct", "limits"])
def test_program_not_found_or_not_executable(tmp_path: Path, limits: dict[str, Any]) -> None:
    async def main(ex: LocalExecutor) -> Outcome:
        started = Started(ex, make(tmp_path, "no-such-program-xyz", **limits))
        for method in (started.proc.pause, started.proc.resume, started.proc.kill):
            method()
        outcome = await started.outcome()
        assert started.calls == 1
        return outcome

    outcome = run(main)
    assert outcome.exit_code == 127
    assert outcome.error is not None
    assert "no-such-program-xyz" in outcome.error
    assert outcome.error.startswith("cannot start")

    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    outcome = run_one(make(tmp_path, str(script), **limits))
    assert outcome.exit_code == 126
    assert outcome.error is not None
    assert "script.sh" in outcome.error


def test_walltime_kills_and_marks_timed_out(tmp_path: Path) -> None:
    t0 = time.monotonic()
    outcome = run_one(make(tmp_path, "sleep", "30", walltime_s=0.3))
    assert time.monotonic() - t0 < 2
    assert outcome.timed_out
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_code is None
    assert 0.25 < outcome.wall_s < 2


def test_pause_resume_terminate(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    script = "while :; do echo x >> ticks; sleep 0.05; done"

    async def main(ex: LocalExecutor) -> Outcome:
        started = Started(ex, make(tmp_path, "sh", "-c", script))
        await wait_for_line(ticks)
        await asyncio.sleep(0.15)
        started.proc.pause()
        await asyncio.sleep(0.1)  # a write under way finishes
        frozen = ticks.stat().st_size
        await asyncio.sleep(0.5)
        assert ticks.stat().st_size == frozen
        started.proc.resume()
        deadline = time.monotonic() + 3
        while ticks.stat().st_size == frozen:
            assert time.monotonic() < deadline, "no progress after resume"
            await asyncio.sleep(0.02)
        started.proc.terminate()
        return await started.outcome()

    outcome = run(main)
    assert outcome.signal == signal.SIGTERM
    assert outcome.exit_code is None


def test_terminate_reaches_a_frozen_group(tmp_path: Path) -> None:
    async def main(ex: LocalExecutor) -> Outcome:
        started = Started(ex, make(tmp_path, "sleep", "30"))
        started.proc.pause()
        await asyncio.sleep(0.05)
        started.proc.terminate()
        return await started.outcome()

    assert run(main).signal == signal.SIGTERM


def test_kill_reaches_grandchildren(tmp_path: Path) -> None:
    async def main(ex: LocalExecutor) -> tuple[Outcome, int]:
        script = "sleep 1000 & echo $! > child.pid; wait"
        started = Started(ex, make(tmp_path, "sh", "-c", script))
        child = int(await wait_for_line(tmp_path / "child.pid"))
        started.proc.kill()
        outcome = await started.outcome()
        started.proc.kill()  # after the end: still fine
        started.proc.terminate()
        return outcome, child

    outcome, child = run(main)
    assert outcome.signal == signal.SIGKILL
    assert gone(child)


def test_leftovers_die_with_the_leader(tmp_path: Path) -> None:
    outcome = run_one(make(tmp_path, "sh", "-c", "sleep 1000 & echo $! > child.pid"))
    assert outcome.exit_code == 0
    assert gone(int((tmp_path / "child.pid").read_text()))


def test_memory_limit(tmp_path: Path) -> None:
    alloc = "b = bytearray(512 * 1024 * 1024); b[-1] = 1"
    assert run_one(make(tmp_path, sys.executable, "-c", alloc)).ok  # without the limit
    outcome = run_one(make(tmp_path, sys.executable, "-c", alloc, memory_bytes=64 << 20))
    assert not outcome.ok
    assert outcome.exit_code != 0


def test_file_size_limit(tmp_path: Path) -> None:
    script = "head -c 5000 /dev/zero > f"
    assert run_one(make(tmp_path, "sh", "-c", script)).ok
    assert (tmp_path / "f").stat().st_size == 5000
    outcome = run_one(make(tmp_path, "sh", "-c", script, file_size_bytes=1000))
    assert not outcome.ok
    assert outcome.exit_code != 0
    assert (tmp_path / "f").stat().st_size <= 1000


def test_cpu_limit(tmp_path: Path) -> None:
    outcome = run_one(make(tmp_path, "sh", "-c", "while :; do :; done", cpu_seconds=0.5))
    assert outcome.signal in (signal.SIGXCPU, signal.SIGKILL)
    # it ran until its limit (1 s, rounded up); the kernel's sampled usage may read lower
    assert outcome.cpu_time_s >= 0.5


def limits_seen(text: str) -> dict[str, tuple[str, str]]:
    """/proc/self/limits as {name: (soft, hard)}."""
    found = {}
    for line in text.splitlines()[1:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        found[name] = (soft, hard)
    return found


@pytest.mark.parametrize(
    ("how", "file_size"),
    [("dash", 1 << 20), ("fork: a size dash cannot say", 1000), ("fork: no dash", 1 << 20)],
)
def test_limits_are_exact_however_the_step_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, file_size: int
) -> None:
    """Limits (and a cgroup) are set up by dash before the exec where it can say them
    exactly, else in a forked child: the step sees the same limits, is the process the
    executor watches, and keeps its own argv[0]."""
    if how.endswith("no dash"):
        monkeypatch.setattr("flowdeck.executors.group.dash", lambda: None)
    script = 'cat /proc/self/limits; echo "$$ $0" > me'
    launch = make(
        tmp_path,
        "sh",
        "-c",
        script,
        "named",
        cpu_seconds=7,
        memory_bytes=900 << 20,
        file_size_bytes=file_size,
    )

    async def main(ex: LocalExecutor) -> tuple[Outcome, int | None]:
        started = Started(ex, launch)
        return await started.outcome(), getattr(started.proc, "pid", None)

    outcome, pid = run(main)
    assert outcome.ok, (tmp_path / "err.txt").read_text()
    seen = limits_seen((tmp_path / "out.txt").read_text())
    assert seen["Max cpu time"] == ("7", "8")
    assert seen["Max address space"] == (str(900 << 20), str(900 << 20))
    assert seen["Max file size"] == (str(file_size), str(file_size))
    assert (tmp_path / "me").read_text().split() == [str(pid), "named"]


def test_usage_is_reported(tmp_path: Path) -> None:
    outcome = run_one(
        make(tmp_path, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    )
    assert outcome.ok
    assert outcome.max_rss_kb > 0
    assert outcome.cpu_time_s >= 0
    assert outcome.wall_s > 0


CODE = """
def add(a, b):
    return {"sum": a + b}


def boom(message):
    raise RuntimeError(message)


def not_json():
    return {1, 2}
"""


def python_step(tmp_path: Path, target: str, **kwargs: Any) -> Outcome:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "stepmod.py").write_text(CODE)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return run_one(make(work, python=target, code_dir=code, kwargs=kwargs))


def test_python_step_result(tmp_path: Path) -> None:
    outcome = python_step(tmp_path, "stepmod:add", a=2, b=3)
    assert outcome.ok, outcome.error
    assert outcome.result == {"sum": 5}


def test_python_step_exception(tmp_path: Path) -> None:
    outcome = python_step(tmp_path, "stepmod:boom", message="it broke")
    assert outcome.exit_code == 1
    assert outcome.result is None
    assert outcome.error is not None
    assert "Traceback" in outcome.error
    assert "RuntimeError: it broke" in outcome.error
    assert "it broke" in (tmp_path / "work" / "err.txt").read_text()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("stepmod:not_json", "not JSON-serialisable"),
        ("stepmod:missing", "AttributeError"),
        ("no_such_module:f", "ModuleNotFoundError"),
        ("stepmod", "module:function"),
    ],
)
def test_python_step_bad_targets(tmp_path: Path, target: str, message: str) -> None:
    outcome = python_step(tmp_path, target)
    assert outcome.exit_code == 1
    assert outcome.error is not None
    assert message in outcome.error


def test_many_concurrent_launches(tmp_path: Path) -> None:
    async def main(ex: LocalExecutor) -> list[Started]:
        all_started = [
            Started(
                ex,
                make(tmp_path, "/bin/true", key=f"run/many/{i}/1", stdout=Path(os.devnull)),
            )
            for i in range(200)
        ]
        outcomes = await asyncio.gather(*(s.outcome(20) for s in all_started))
        assert all(o.exit_code == 0 for o in outcomes)
        await asyncio.sleep(0.05)
        return all_started

    assert [s.calls for s in run(main)] == [1] * 200


def test_each_process_is_named_by_its_pid_and_start_time(tmp_path: Path) -> None:
    """The start time recorded at spawn (without reading /proc when the spawn fits in one
    clock tick) is the kernel's: a reused pid is never mistaken for the step."""

    async def main(ex: LocalExecutor) -> list[tuple[int, int | None]]:
        started = [Started(ex, make(tmp_path, "sleep", "5", key=f"r/s/{i}/1")) for i in range(40)]
        named = [(s.proc.pid, s.proc.start_time) for s in started]  # type: ignore[attr-defined]
        for s in started:
            assert same_process_alive(s.proc.pid, s.proc.start_time)  # type: ignore[attr-defined]
            assert not same_process_alive(s.proc.pid, s.proc.start_time + 1)  # type: ignore[attr-defined]
            assert s.proc.start_time == process_start_time(s.proc.pid)  # type: ignore[attr-defined]
            s.proc.kill()
        for s in started:
            await s.outcome()
        return named

    named = run(main)
    assert len({pid for pid, _ in named}) == 40
