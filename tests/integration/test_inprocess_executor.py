"""The in-server executor: python steps in a pool of pre-forked worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.inprocess import InProcessExecutor

STEPS = """
import os, sys, time, pathlib

def add(a, b):
    print("adding", a, b)
    print("to stderr", file=sys.stderr)
    return {"sum": a + b, "var": os.environ.get("FD_VAR"), "home": os.environ.get("HOME"),
            "cwd": os.getcwd()}

def pid():
    return os.getpid()

def boom(n):
    raise ValueError(f"boom {n}")

def unserialisable():
    return {"a set": {1, 2}}

def die(code):
    os._exit(code)

def nap(seconds, marker=None):
    if marker:
        pathlib.Path(marker).write_text("ran")
    time.sleep(seconds)
    return seconds
"""

Make = Callable[[int], InProcessExecutor]


@pytest.fixture
def make_executor() -> Iterator[Make]:
    made: list[InProcessExecutor] = []

    def make(workers: int = 2) -> InProcessExecutor:
        made.append(InProcessExecutor(workers=workers))
        return made[-1]

    yield make
    for executor in made:
        executor.close()


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    return write_module(tmp_path / "code", "steps_mod", STEPS)


def write_module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return directory


def launch(code_dir: Path, python: str, key: str = "run/step/1/1", **extra: Any) -> Launch:
    work = code_dir.parent / "work" / key.replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {"env": {"PATH": os.environ.get("PATH", ""), "FD_VAR": "v"}, **extra}
    return Launch(
        key=key,
        cwd=work,
        stdout=work / "stdout",
        stderr=work / "stderr",
        python=f"steps_mod:{python}" if ":" not in python else python,
        code_dir=code_dir,
        **fields,
    )


class Watch:
    """on_exit for one attempt: a Future for the first outcome, and a count of calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[Outcome] = loop.create_future()
        self.calls = 0

    def __call__(self, outcome: Outcome) -> None:
        self.calls += 1
        if not self.future.done():
            self.future.set_result(outcome)


async def begin(executor: InProcessExecutor, job: Launch) -> tuple[StepProcess, Watch]:
    loop = asyncio.get_running_loop()
    watch = Watch(loop)
    return executor.start(job, watch, loop), watch


async def run(executor: InProcessExecutor, job: Launch) -> Outcome:
    _, watch = await begin(executor, job)
    outcome = await asyncio.wait_for(watch.future, 10)
    await asyncio.sleep(0)
    assert watch.calls == 1
    return outcome


def test_a_python_step_returns_its_result_and_writes_its_output(
    make_executor: Make, code_dir: Path
) -> None:
    executor = make_executor(2)
    job = launch(code_dir, "add", kwargs={"a": 2, "b": 3})
    outcome = asyncio.run(run(executor, job))
    assert outcome.ok, outcome.error
    assert outcome.exit_code == 0
    assert outcome.result == {"sum": 5, "var": "v", "home": None, "cwd": str(job.cwd)}
    assert job.stdout.read_text() == "adding 2 3\n"
    assert job.stderr.read_text() == "to stderr\n"
    assert outcome.max_rss_kb > 0
    assert outcome.cpu_time_s >= 0
    assert outcome.wall_s > 0


def test_the_same_workers_serve_many_steps(make_executor: Make, code_dir: Path) -> None:
    executor = make_executor(2)

    async def main() -> tuple[set[int], list[float]]:
        pids: set[int] = set()
        walls: list[float] = []
        for i in range(50):
            outcome = await run(executor, launch(code_dir, "pid", key=f"r/pid/{i}/1"))
            assert outcome.ok, outcome.error
            pids.add(outcome.result)
            walls.append(outcome.wall_s)
        return pids, walls

    pids, walls = asyncio.run(main())
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids
    later = sorted(walls[1:])
    print(
        f"\nper-step wall: first {walls[0] * 1000:.1f} ms, median of the rest "
        f"{later[len(later) // 2] * 1000:.2f} ms, max {later[-1] * 1000:.2f} ms"
    )


def test_an_exception_is_an_error_with_its_traceback(make_executor: Make, code_dir: Path) -> None:
    outcome = asyncio.run(run(make_executor(1), launch(code_dir, "boom", kwargs={"n": 42})))
    assert outcome.exit_code == 1
    assert not outcome.ok
    for part in ("Traceback", "steps_mod.py", "ValueError: boom 42"):
        assert part in str(outcome.error)


def test_a_result_that_is_not_json_is_an_error(make_executor: Make, code_dir: Path) -> None:
    outcome = asyncio.run(run(make_executor(1), launch(code_dir, "unserialisable")))
    assert outcome.exit_code == 1
    assert outcome.error is not None
    assert "JSON" in outcome.error
    assert outcome.result is None


def test_a_bad_target_is_an_error_and_the_worker_survives(
    make_executor: Make, code_dir: Path
) -> None:
    executor = make_executor(1)

    async def main() -> list[Outcome]:
        return [
            await run(executor, launch(code_dir, "no_such_module:f")),
            await run(executor, launch(code_dir, "steps_mod:missing")),
            await run(executor, replace(launch(code_dir, "pid"), python="not-a-spec")),
            await run(executor, launch(code_dir, "pid")),
        ]

    missing, no_function, bad_spec, fine = asyncio.run(main())
    assert missing.exit_code == 1 and "No module named 'no_such_module'" in str(missing.error)
    assert no_function.exit_code == 1 and "missing" in str(no_function.error)
    assert bad_spec.exit_code == 1 and "module:function" in str(bad_spec.error)
    assert fine.ok


def test_kill_ends_a_running_step_and_the_pool_keeps_serving(
    make_executor: Make, code_dir: Path
) -> None:
    executor = make_executor(1)

    async def main() -> tuple[Outcome, float, Outcome, Outcome]:
        first = await run(executor, launch(code_dir, "pid", key="r/a/1/1"))
        process, watch = await begin(executor, launch(code_dir, "nap", kwargs={"seconds": 1000}))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        process.kill()
        killed = await asyncio.wait_for(watch.future, 5)
        took = time.monotonic() - t0
        process.kill()  # already ended: nothing happens
        process.terminate()
        after = await run(executor, launch(code_dir, "pid", key="r/b/1/1"))
        assert watch.calls == 1
        return killed, took, first, after

    killed, took, first, after = asyncio.run(main())
    assert killed.signal == signal.SIGKILL
    assert killed.exit_code is None
    assert not killed.timed_out
    assert not killed.ok
    assert took < 2
    assert after.ok
    assert after.result != first.result  # the killed worker was replaced


def test_terminate_ends_a_step_and_a_worker_that_dies_is_replaced(
    make_executor: Make, code_dir: Path
) -> None:
    executor = make_executor(1)

    async def main() -> tuple[Outcome, Outcome, Outcome]:
        process, watch = await begin(executor, launch(code_dir, "nap", kwargs={"seconds": 1000}))
        await asyncio.sleep(0.2)
        process.terminate()
        terminated = await asyncio.wait_for(watch.future, 5)
        died = await run(executor, launch(code_dir, "die", key="r/die/1/1", kwargs={"code": 3}))
        return terminated, died, await run(executor, launch(code_dir, "pid", key="r/ok/1/1"))

    terminated, died, after = asyncio.run(main())
    assert terminated.signal == signal.SIGTERM
    assert terminated.exit_code is None
    assert terminated.error is None  # asked for: not a failure of the executor
    assert died.exit_code == 3
    assert "worker died (exit code 3)" in str(died.error)
    assert after.ok


def test_walltime_kills_the_step(make_executor: Make, code_dir: Path) -> None:
    job = launch(code_dir, "nap", kwargs={"seconds": 1000}, walltime_s=0.3)
    outcome = asyncio.run(run(make_executor(1), job))
    assert outcome.timed_out
    assert outcome.signal == signal.SIGKILL
    assert outcome.exit_code is None
    assert 0.3 <= outcome.wall_s < 3


def test_more_steps_than_workers_queue_and_a_queued_kill_never_runs(
    make_executor: Make, code_dir: Path, tmp_path: Path
) -> None:
    executor = make_executor(2)
    marker = tmp_path / "marker"

    def nap(key: str, **kwargs: Any) -> Launch:
        return launch(code_dir, "nap", key=key, kwargs=kwargs)

    async def main() -> tuple[list[Outcome], Outcome]:
        started = [await begin(executor, nap(f"r/n/{i}/1", seconds=0.2)) for i in range(6)]
        victim, watch = await begin(executor, nap("r/victim/1/1", seconds=0, marker=str(marker)))
        victim.kill()
        killed = await asyncio.wait_for(watch.future, 5)
        return [await asyncio.wait_for(w.future, 10) for _, w in started], killed

    outcomes, killed = asyncio.run(main())
    assert [o.result for o in outcomes] == [0.2] * 6
    assert all(o.ok for o in outcomes)
    assert killed.signal == signal.SIGKILL
    assert killed.exit_code is None
    assert not marker.exists()


def test_a_new_version_of_a_module_is_not_served_stale(make_executor: Make, tmp_path: Path) -> None:
    executor = make_executor(1)
    one = write_module(tmp_path / "code" / "v1", "same_name", "def value():\n    return 1\n")
    two = write_module(tmp_path / "code" / "v2", "same_name", "def value():\n    return 2\n")

    async def main() -> list[Any]:
        results = []
        for i, directory in enumerate((one, two, one)):
            outcome = await run(executor, launch(directory, "same_name:value", key=f"r/v/{i}/1"))
            assert outcome.ok, outcome.error
            results.append(outcome.result)
        return results

    assert asyncio.run(main()) == [1, 2, 1]


def test_pause_cannot_and_a_run_step_is_refused(make_executor: Make, code_dir: Path) -> None:
    executor = make_executor(1)
    assert executor.name == "inprocess"
    assert executor.can_freeze is False
    job = replace(launch(code_dir, "pid"), python=None, argv=("true",))

    async def main() -> tuple[StepProcess, Outcome]:
        process, watch = await begin(executor, job)
        return process, await watch.future

    process, refused = asyncio.run(main())
    assert refused.error is not None and "python steps only" in refused.error
    with pytest.raises(NotImplementedError, match="only drain"):
        process.pause()
    with pytest.raises(NotImplementedError, match="only drain"):
        process.resume()


def test_close_ends_what_runs_and_waits(make_executor: Make, code_dir: Path) -> None:
    executor = make_executor(1)

    async def main() -> tuple[Outcome, Outcome, Outcome]:
        _, running = await begin(executor, launch(code_dir, "nap", kwargs={"seconds": 1000}))
        _, queued = await begin(
            executor, launch(code_dir, "nap", key="r/q/1/1", kwargs={"seconds": 0})
        )
        await asyncio.sleep(0.2)
        executor.close()
        executor.close()  # twice is fine
        _, late = await begin(executor, launch(code_dir, "pid", key="r/l/1/1"))
        return await running.future, await queued.future, await late.future

    running, queued, late = asyncio.run(main())
    for outcome in (running, queued, late):
        assert not outcome.ok
        assert "closed" in str(outcome.error)
