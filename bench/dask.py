"""flowdeck's Dask executor beside plain ``distributed`` on the same cluster: a private
scheduler and two workers (``tests/daskcluster.py``: as root, the workers run as the step
user ``flowdeck-step``), each declaring ``cpus=2``.

- a foreach scatter of N items (default 1,000) of a trivial python step through flowdeck
  (``executor: dask``): per-task time and steps per second, beside ``client.map`` of the
  same function over the same items with the same resources (``cpus=1`` per task) on the
  same cluster (goal: at most 1 ms per task more);
- where the time goes: the same map, each task running the function the way a flowdeck
  python step does (``python -m flowdeck.executors.pystep`` in a subprocess of the worker,
  its arguments and result in files); and a scatter of N ``/bin/true`` command steps
  through flowdeck beside ``client.map`` of ``/bin/true`` as a subprocess (flowdeck's own
  cost per task, without a Python start in each).

    python -m bench.dask [--items 1000] [--poll 0.5] [--sandbox bwrap|off]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figure, report, scratch_dir
from bench.runs import FANOUT, duration, push, wait_for_end
from bench.server import server

API = "/api/v1"
SPEC = """\
name: dask-bench
version: "1"
inputs:
  n: {type: array, items: int}
steps:
  t:
    foreach: ${{ inputs.n }}
    python: trivial:ident
    with: {x: "${{ item }}"}
    outputs:
      v: {return: v}
"""
CODE = "def ident(x):\n    return {'v': x}\n"


def ident(x: int) -> dict[str, int]:
    """The step's function, for the plain map."""
    return {"v": x}


def true_command(x: int) -> int:
    """A command step's work, for the plain map: ``/bin/true`` as a subprocess."""
    return subprocess.run(["/bin/true"], check=True).returncode + x * 0


def as_a_step(folder: str) -> Callable[[int], dict[str, Any]]:
    """The function run as flowdeck runs a python step: a subprocess of the worker."""

    def run(x: int) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            args, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
            args.write_text(json.dumps({"x": x}))
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "flowdeck.executors.pystep",
                    "trivial:ident",
                    folder,
                    str(args),
                    str(result),
                ],
                check=True,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
            )
            data: dict[str, Any] = json.loads(result.read_text())
            return data

    return run


def plain_map(address: str, fn: Callable[[int], Any], items: int) -> float:
    """Seconds for ``client.map(fn, range(items))`` (cpus=1 a task) to complete."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        client.submit(fn, -1, resources={"cpus": 1}, pure=False).result()  # warm
        t0 = time.perf_counter()
        futures = client.map(fn, range(items), resources={"cpus": 1}, pure=False)
        client.gather(futures)
        seconds = time.perf_counter() - t0
        assert all(f.status == "finished" for f in futures)
        return seconds


def through_flowdeck(
    address: str, user: str | None, items: int, poll_s: float, sandbox: str
) -> tuple[float, float]:
    """Seconds of a run whose scatter of ``items`` python steps runs on Dask, and of one
    of ``items`` ``/bin/true`` command steps."""
    folder = Path(tempfile.mkdtemp(dir=scratch_dir()))
    folder.chmod(0o755)  # (the workers' user reaches the data directory in it)
    settings = {
        "data_dir": str(folder / "data"),
        "dask": "true",
        "dask_scheduler": address,
        "default_executor": "dask",
        "dask_poll_s": str(poll_s),
        "sandbox": sandbox,
        **({"dask_worker_user": user} if user else {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("flowdeck.yaml", SPEC)
        zf.writestr("trivial.py", CODE)
    with (
        contextlib.ExitStack() as cleanup,
        server(**settings) as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        r = c.post(
            f"{API}/workflows",
            content=buf.getvalue(),
            headers={"content-type": "application/zip"},
        )
        r.raise_for_status()
        body = {"workflow": "dask-bench@1", "params": {"n": [0]}, "start": True}
        warm = wait_for_end(c, c.post(f"{API}/runs", json=body).json()["id"])
        assert warm["state"] == "succeeded", warm
        body["params"] = {"n": list(range(items))}
        status = wait_for_end(c, c.post(f"{API}/runs", json=body).json()["id"])
        assert status["state"] == "succeeded", status
        push(c, FANOUT)
        fan = {"workflow": "fanout-bench@1", "params": {"n": list(range(items))}, "start": True}
        commands = wait_for_end(c, c.post(f"{API}/runs", json=fan).json()["id"])
        assert commands["state"] == "succeeded", commands
        return duration(status), duration(commands)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=0.5, help="dask_poll_s of the server")
    parser.add_argument(
        "--sandbox", choices=["bwrap", "off"], default="bwrap", help="the server's sandbox"
    )
    args = parser.parse_args()
    from tests.daskcluster import DaskCluster, missing

    reason = missing()
    if reason is not None:
        print(f"== dask: not run: {reason}")
        return
    scratch_dir().chmod(0o755)
    import cloudpickle  # type: ignore[import-untyped] # the functions mapped travel by value (workers lack bench/)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = DaskCluster()
    try:
        cluster.start()
        code = Path(tempfile.mkdtemp(dir=cluster.base))
        code.chmod(0o755)
        (code / "trivial.py").write_text(CODE)
        plain = plain_map(cluster.address, ident, args.items)
        stepwise = plain_map(cluster.address, as_a_step(str(code)), args.items)
        plain_true = plain_map(cluster.address, true_command, args.items)
        flowdeck, flowdeck_true = through_flowdeck(
            cluster.address, cluster.user, args.items, args.poll, args.sandbox
        )
    finally:
        cluster.destroy()
    n = args.items
    per_plain, per_step, per_flowdeck, per_true, per_fd_true = (
        s / n * 1000 for s in (plain, stepwise, flowdeck, plain_true, flowdeck_true)
    )
    print(
        f"  {n} tasks: client.map {per_plain:.2f} ms/task; the same as a pystep subprocess "
        f"{per_step:.2f} ms/task; flowdeck {per_flowdeck:.2f} ms/task "
        f"(+{per_flowdeck - per_plain:.2f} ms/task over client.map, "
        f"+{per_flowdeck - per_step:.2f} over the subprocess map); "
        f"{n / flowdeck:.1f} steps/s"
    )
    print(
        f"  {n} /bin/true: client.map {per_true:.2f} ms/task; flowdeck command steps "
        f"{per_fd_true:.2f} ms/task (+{per_fd_true - per_true:.2f} ms/task); "
        f"{n / flowdeck_true:.1f} steps/s"
    )
    figures = [
        Figure(
            f"scatter-{n}: ms per task",
            per_flowdeck,
            "ms",
            "client.map, same cluster",
            per_plain,
            goal="<= +1 ms",
        ),
        Figure(
            f"scatter-{n}: ms per task",
            per_flowdeck,
            "ms",
            "client.map of a pystep subprocess",
            per_step,
        ),
        Figure(f"scatter-{n}: steps per second", n / flowdeck, "1/s", "client.map", n / plain),
        Figure(
            f"scatter-{n} of /bin/true: ms per task",
            per_fd_true,
            "ms",
            "client.map of /bin/true",
            per_true,
        ),
    ]
    report("dask", figures, {"dask_poll_s": args.poll, "items": n, "sandbox": args.sandbox})


if __name__ == "__main__":
    main()
