"""What starting one local step costs, piece by piece: one `/bin/true` at a time, started
and reaped ``--n`` times, each way beside the bare spawn measured in the same run.

- the bare spawn (``subprocess`` with ``vfork``), and the same with a ``preexec_fn`` (a
  fork of this process, small, then holding 150 MiB: the supervisor's and the server's
  order of size);
- the local executor's step without limits, with limits (set by dash before the exec),
  with limits set in a forked child (no dash: the fallback), and in a cgroup of its own
  (where this process may make one);
- the execs a sandboxed step adds: dash, ``setpriv`` (the uid switch, as root) and a bare
  bwrap.

    python -m bench.spawn [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from bench.common import Figure, report
from bench.runs import TRUE, bwrap_true
from flowdeck.executors import group
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.cgroups import Cgroups
from flowdeck.executors.local import LocalExecutor

BALLAST_MIB = 150


def per_start_ms(start: Callable[[], None], n: int) -> float:
    for _ in range(max(5, n // 20)):  # warm-up: the file cache
        start()
    t0 = time.perf_counter()
    for _ in range(n):
        start()
    return (time.perf_counter() - t0) / n * 1000


def popen(argv: list[str], **kwargs: object) -> Callable[[], None]:
    def start() -> None:
        subprocess.Popen(argv, start_new_session=True, **kwargs).wait()  # type: ignore[call-overload]

    return start


def executor_ms(n: int, limits: bool, cgroups: Cgroups | None) -> float:
    """ms per step of the local executor, one at a time in its loop."""
    ex = LocalExecutor(cgroups)
    work = Path(tempfile.mkdtemp(dir=os.environ.get("FLOWDECK_BENCH_DIR")))
    extra = {"cpu_seconds": 100, "file_size_bytes": 1 << 30} if limits else {}

    async def main() -> float:
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            done: asyncio.Future[Outcome] = loop.create_future()
            launch = Launch(
                key=f"bench/t/{i}/1",
                cwd=work,
                env={"PATH": "/usr/bin:/bin"},
                stdout=work / "out",
                stderr=work / "err",
                argv=tuple(TRUE),
                **extra,  # type: ignore[arg-type]
            )
            ex.start(launch, done.set_result, loop)
            outcome = await done
            assert outcome.ok, outcome

        for i in range(max(5, n // 20)):
            await one(i)
        t0 = time.perf_counter()
        for i in range(n):
            await one(i)
        return (time.perf_counter() - t0) / n * 1000

    try:
        return asyncio.run(main())
    finally:
        ex.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300)
    n = parser.parse_args().n
    bare = per_start_ms(popen(TRUE), n)
    figures = [Figure("spawn /bin/true (vfork)", bare, "ms", "itself", bare)]

    def fig(name: str, value: float, base: float = bare, base_name: str = "vfork") -> None:
        figures.append(Figure(name, value, "ms", base_name, base))

    fig("the same with a preexec_fn (fork)", per_start_ms(popen(TRUE, preexec_fn=int), n))
    ballast = bytearray(BALLAST_MIB << 20)
    ballast[:: 1 << 12] = b"x" * len(ballast[:: 1 << 12])  # touched: resident
    fig(f"fork with {BALLAST_MIB} MiB resident", per_start_ms(popen(TRUE, preexec_fn=int), n))
    fig(f"vfork with {BALLAST_MIB} MiB resident", per_start_ms(popen(TRUE), n))
    del ballast

    fig("executor step, no limits", executor_ms(n, False, None))
    fig("executor step with limits (dash)", executor_ms(n, True, None))
    with mock.patch.object(group, "dash", return_value=None):  # no dash: a forked child
        fig("executor step with limits (forked child)", executor_ms(n, True, None))
    found = Cgroups.find(f"bench-{os.getpid()}")
    if found is not None:
        try:
            fig("executor step with limits and a cgroup (dash)", executor_ms(n, True, found))
        finally:
            found.close()
    else:
        print("  (no cgroup v2 this process may write to: the cgroup figure is left out)")

    shell = group.dash()
    if shell is not None:
        through_dash = popen([shell, "-c", 'exec "$@"', "-", *TRUE])
        fig("dash, then exec /bin/true", per_start_ms(through_dash, n))
    setpriv = shutil.which("setpriv")
    if setpriv is not None and os.geteuid() == 0:
        switch = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        switch += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *TRUE]
        fig("setpriv (a step's uid switch), then /bin/true", per_start_ms(popen(switch), n))
    if shutil.which("bwrap") is not None:
        fig("bare bwrap /bin/true (the sandboxed floor)", per_start_ms(popen(bwrap_true()), n))
    report("spawn", figures, {"n": n})


if __name__ == "__main__":
    main()
