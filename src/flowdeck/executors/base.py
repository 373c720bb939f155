"""The executor boundary.

The scheduler runs an asyncio loop in its own thread.  It asks an executor to
:meth:`Executor.start` a step attempt described by a :class:`Launch`; the executor calls
``on_exit(outcome)`` in that loop when the attempt ends, whatever the cause (exit, signal,
walltime, failure to start).  ``start`` never raises for a problem of the step itself
(command not found, bad module): that is an :class:`Outcome` with ``error`` set.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The executors whose attempts run on a cluster and outlive the server: their steps take
# none of its slots, and a restarted server adopts their attempts by key or job id.
CLUSTER_EXECUTORS = ("slurm", "dask")


@dataclass(frozen=True, slots=True)
class Launch:
    key: str  # unique per attempt, e.g. "run_x/align/3/2"
    cwd: Path  # the step's working directory (exists)
    env: dict[str, str]  # the complete environment of the step
    stdout: Path  # file the standard output goes to (created/truncated)
    stderr: Path  # file the standard error goes to
    argv: tuple[str, ...] = ()  # a run step: the program and its arguments
    python: str | None = None  # a python step: "module:function"
    code_dir: Path | None = None  # where the python step's module lives
    kwargs: dict[str, Any] = field(default_factory=dict)  # the python step's arguments
    stdin: Path | None = None  # file fed to standard input (else /dev/null)
    cpu_seconds: float | None = None  # RLIMIT_CPU
    memory_bytes: int | None = None  # RLIMIT_AS
    file_size_bytes: int | None = None  # RLIMIT_FSIZE
    max_processes: int | None = None  # RLIMIT_NPROC (counted per uid)
    walltime_s: float | None = None  # killed (and timed_out) after this long
    record: Path | None = None  # where the supervisor keeps pid, start time and outcome
    sandbox: dict[str, Any] | None = None  # what the step may see (executors/sandbox.py)
    cpus: float = 1.0  # the step's resources.cpus (a Slurm job's --cpus-per-task)
    # sbatch options the run added (resources.slurm_options, as the admin allows):
    # name -> value, or True for a flag
    slurm_options: dict[str, Any] = field(default_factory=dict)
    foreach_limit: int | None = None  # a foreach instance: its step's instances at once


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int | None  # None when ended by a signal
    signal: int | None = None  # the signal that ended it
    timed_out: bool = False  # ended because walltime_s passed
    max_rss_kb: int = 0
    cpu_time_s: float = 0.0  # user + system
    wall_s: float = 0.0
    result: Any = None  # a python step's return value
    error: str | None = None  # could not start, or the python exception (with traceback)
    lost: bool = False  # its supervisor went away: how it ended is unknown

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


class StepProcess(ABC):
    """A running attempt.  Every method is safe to call after the attempt ended."""

    key: str

    @abstractmethod
    def pause(self) -> None:
        """Freeze the attempt (SIGSTOP to its process group)."""

    @abstractmethod
    def resume(self) -> None:
        """Continue a frozen attempt (SIGCONT)."""

    @abstractmethod
    def terminate(self) -> None:
        """Ask it to end (SIGTERM to the whole process group)."""

    @abstractmethod
    def kill(self) -> None:
        """End it now (SIGKILL to the whole process group); already gone is success."""

    def watch(self, fn: Callable[[str, str | None], None]) -> None:  # noqa: B027
        """Have ``fn(job_id, waiting)`` called (in the loop) when the attempt's job in a
        cluster's queue is submitted, and whenever it starts or stops waiting there
        (``waiting``: why it waits, else None).  Nothing here: a local attempt runs at
        once."""


class NoProcess(StepProcess):
    """An attempt with no process (it never started, or its end is already known): every
    method does nothing."""

    def __init__(self, key: str) -> None:
        self.key = key

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


class Executor(ABC):
    name: str
    can_freeze: bool = True  # False: pause can only drain
    freeze_refusal: str = "steps on the in-server executor cannot be frozen: use mode 'drain'"
    # True: it starts an attempt key at most once, and a start asked again after a crash
    # finds the attempt (running or ended) instead of starting a second; so the scheduler
    # may start a step before the commit that records it (runtime/core.py).
    starts_once: bool = False

    @abstractmethod
    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        """Start the attempt; must be called in ``loop``'s thread."""

    def when_started(self, key: str, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the attempt ``key`` (just started) holds its files; here at
        once, for executors whose :meth:`start` returns a started process."""
        fn()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (worker processes)."""
