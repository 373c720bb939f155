"""The warm cwltool pool of the local executor (executors/cwlpool.py) with real bubblewrap
and cwltool: a CWL step forks from the worker once it is ready, and starts cold (and
still succeeds) when the worker cannot import cwltool."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowdeck.engines.cwl_names import SHIM_FILE, SHIM_SOURCE, SHIM_TARGET
from flowdeck.executors import cwlpool
from flowdeck.executors.base import Launch
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.runbox import BoxedProcess
from flowdeck.executors.sandbox import plan
from tests.integration.test_runbox import Step, run, until

CWL = Path(__file__).parents[1] / "data" / "cwl"
WARM = "cwltool from a warm worker"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="warm cwltool workers need root (step_uids) and bubblewrap",
)


class CwlRuns:
    """A data directory with one CWL workflow (greet.cwl) and its runs' launches."""

    def __init__(self, root: Path, tool: str = "greet.cwl") -> None:
        self.data = root / "data"
        self.code = self.data / "workflows" / "wf_1"
        self.code.mkdir(parents=True)
        (self.code / "workflow.cwl").write_bytes((CWL / tool).read_bytes())
        (self.code / SHIM_FILE).write_text(SHIM_SOURCE)
        self.count = 0

    def launch(
        self,
        name: str,
        inputs: dict[str, Any] | None = None,
        file_inputs: dict[str, str] | None = None,
        output: str = "greeting",
        other_files: tuple[Path, ...] = (),
    ) -> Launch:
        self.count += 1
        run_dir = self.data / "runs" / f"run_{self.count}"
        work, tmp = run_dir / "work", run_dir / "tmp"
        cwd = work / "cwl"
        cwd.mkdir(parents=True)
        tmp.mkdir()
        spec = plan(
            ro=[work, self.code, *other_files],  # other runs' files named as inputs
            rw=[cwd, tmp],
            grant=[self.code],
            deny=[self.data],
            network=False,
            step_user="flowdeck-step",
            step_uids=(920100, 920199),
            max_processes=256,
            work=work,
            warm=1,
        )
        kwargs: dict[str, Any] = {
            "workflow": "workflow.cwl",
            "inputs": inputs if inputs is not None else {"name": name, "greeting": "Hi"},
            "file_inputs": file_inputs or {},
            "file_outputs": {output: output},
            "cwltool_options": None,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(sys.path[1:]),
            "HOME": str(cwd),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
        }
        return Launch(
            key=f"run_{self.count}/cwl/0/1",
            cwd=cwd,
            env=env,
            stdout=run_dir / "stdout",
            stderr=run_dir / "stderr",
            python=SHIM_TARGET,
            code_dir=self.code,
            kwargs=kwargs,
            sandbox=spec,
        )


async def warm(ex: LocalExecutor, start: Callable[[], Step]) -> Step:
    """A step that forked from the warm worker (the first starts the worker, cold)."""
    for _ in range(100):
        step = start()
        outcome = await step.outcome(within=120)
        assert outcome.ok, (outcome, step.launch.stderr.read_text()[-3000:])
        if isinstance(step.proc, BoxedProcess):
            return step
        await asyncio.sleep(0.2)
    raise AssertionError("no step forked from the warm worker")


async def greet(ex: LocalExecutor, runs: CwlRuns, name: str) -> Step:
    step = Step(ex, runs.launch(name))
    outcome = await step.outcome(within=120)
    assert outcome.ok, outcome
    assert outcome.result["object"]["greeting"]["basename"] == f"{name}.txt"
    assert (step.launch.cwd / "outputs" / "greeting" / f"{name}.txt").read_text() == f"Hi {name}\n"
    return step


def test_a_cwl_step_forks_from_the_warm_worker_once_it_is_ready(tmp_path: Path) -> None:
    runs = CwlRuns(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        first = await greet(ex, runs, "cold")  # starts the worker
        assert WARM not in first.launch.stderr.read_text()
        assert ex.pool.pids()
        for attempt in range(100):
            step = await greet(ex, runs, f"w{attempt}")
            if isinstance(step.proc, BoxedProcess):
                assert WARM in step.launch.stderr.read_text()
                return
            await asyncio.sleep(0.2)
        raise AssertionError("no step forked from the warm worker")

    run(main)


def test_a_worker_that_cannot_import_cwltool_leaves_steps_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = cwlpool.Worker.command

    def broken(self: cwlpool.Worker, spec: dict[str, Any], fd: int) -> list[str]:
        argv = real(self, spec, fd)
        at = argv.index("flowdeck.executors.zygote")  # python -m it: python -c instead
        code = (
            "import sys; sys.modules['cwltool'] = None; "
            "from flowdeck.executors.zygote import main; sys.exit(main(sys.argv))"
        )
        return [*argv[: at - 1], "-c", code, *argv[at + 1 :]]

    monkeypatch.setattr(cwlpool.Worker, "command", broken)
    runs = CwlRuns(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await greet(ex, runs, "first")  # starts the worker, which says it cannot
        await until(lambda: not ex.pool.pids(), within=60)
        for name in ("second", "third"):
            step = await greet(ex, runs, name)
            assert not isinstance(step.proc, BoxedProcess)
            assert WARM not in step.launch.stderr.read_text()
        assert not ex.pool.pids()  # not retried at once

    run(main)
    assert "cannot import cwltool (ModuleNotFoundError" in caplog.text


def test_a_pooled_run_reads_another_runs_file_it_names_and_nothing_else_of_it(
    tmp_path: Path,
) -> None:
    runs = CwlRuns(tmp_path, "sort.cwl")
    other = runs.data / "runs" / "run_0" / "work" / "step"
    other.mkdir(parents=True)
    (other / "fruit.txt").write_text("fig\napple\npear\n")
    (other / "private.txt").write_text("not an input\n")
    named = other / "fruit.txt"

    def sort(ex: LocalExecutor, text: Path) -> Step:
        launch = runs.launch(
            "sort",
            inputs={"reverse": False, "text": str(text)},
            file_inputs={"text": "File"},
            output="sorted",
            other_files=(named,),  # as a graph node's input: that file of the other run
        )
        return Step(ex, launch)

    async def main(ex: LocalExecutor) -> None:
        step = await warm(ex, lambda: sort(ex, named))
        assert WARM in step.launch.stderr.read_text()
        sorted_file = step.launch.cwd / "outputs" / "sorted" / "sorted.txt"
        assert sorted_file.read_text() == "apple\nfig\npear\n"
        # the other run's other files are not there for it
        nosy = sort(ex, other / "private.txt")
        outcome = await nosy.outcome(within=120)
        assert isinstance(nosy.proc, BoxedProcess) and not outcome.ok
        err = nosy.launch.stderr.read_text()
        assert WARM in err and "No such file or directory" in err and "not an input" not in err

    run(main)


def test_a_step_whose_view_the_worker_cannot_set_up_starts_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a folder that is not a detached copy cannot be attached in the run's namespace
    monkeypatch.setattr(
        cwlpool, "clone_tree", lambda path, read_only: os.open(path, os.O_PATH | os.O_CLOEXEC)
    )
    runs = CwlRuns(tmp_path)

    async def main(ex: LocalExecutor) -> None:
        await greet(ex, runs, "first")  # starts the worker
        await until(lambda: bool(ex.pool.pids()), within=30)
        for attempt in range(100):
            step = await greet(ex, runs, f"n{attempt}")  # succeeds all the same
            assert WARM not in step.launch.stderr.read_text()
            if isinstance(step.proc, cwlpool.PooledProcess):  # the worker tried, then cold
                assert "starting it cold" in caplog.text and "move_mount" in caplog.text
                return
            await asyncio.sleep(0.2)
        raise AssertionError("the worker never took a step")

    run(main)
