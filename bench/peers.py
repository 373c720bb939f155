"""Step overhead beside peers, in one run on the same machine: a chain of 40 tasks and a
fan-out of 1,000, through flowdeck (``/bin/true`` steps on a server with the default
settings, the sandbox on), Prefect 3 (a local ``prefect server``, its start-up outside the
timed part; Python tasks) and Dask (``distributed``, a local cluster of two worker
processes; Python tasks).  Per task: the chain's wall time over 40, the fan-out's over
1,000.  Prefect is installed from PyPI into its own virtual environment under the cache
directory on first use (``prefect>=3,<4``).

    python -m bench.peers [--chain 40] [--fanout 1000] [--skip prefect|dask ...]

Published figures for others (Hatchet, Temporal, Airflow) are in docs/performance.md as
context only: they were not measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import Figure, report, scratch_dir
from bench.runs import FANOUT, chain_spec, duration, push, run_and_wait, wait_for_end
from bench.server import _port, server
from bench.venvs import venv_program

API = "/api/v1"
PREFECT = "prefect>=3,<4"

# Run by the Prefect environment's interpreter: a warm-up, then each workload once; prints
# the seconds of each as JSON.
PREFECT_SCRIPT = """
import json, sys, time
from prefect import flow, task

@task
def inc(x: int) -> int:
    return x + 1

@flow
def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x

@flow
def fan(n: int) -> int:
    return sum(f.result() for f in inc.map(range(n)))

n_chain, n_fan = int(sys.argv[1]), int(sys.argv[2])
chain(2); fan(2)  # warm-up: imports, the server's first answers
t0 = time.perf_counter(); assert chain(n_chain) == n_chain; t1 = time.perf_counter()
assert fan(n_fan) == n_fan * (n_fan + 1) // 2; t2 = time.perf_counter()
print(json.dumps({"chain_s": t1 - t0, "fanout_s": t2 - t1}))
"""


def prefect_python() -> Path:
    """The Prefect environment's interpreter (made on first use)."""
    return venv_program("prefect-venv", [PREFECT], "prefect").with_name("python")


@contextmanager
def prefect_server(python: Path) -> Iterator[dict[str, str]]:
    """A local Prefect server on a free port (its own home and SQLite database): the
    environment its clients need."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as home:
        port = _port()
        env = {
            **os.environ,
            "PREFECT_HOME": home,
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        argv = [str(python.with_name("prefect")), "server", "start"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        with (Path(home) / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                for _ in range(1200):
                    with contextlib.suppress(httpx.TransportError):
                        if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                            break
                    if proc.poll() is not None:
                        raise SystemExit(f"prefect server ended: {Path(log.name).read_text()}")
                    time.sleep(0.1)
                yield env
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(30)


def prefect_figures(n_chain: int, n_fan: int) -> dict[str, float]:
    python = prefect_python()
    with prefect_server(python) as env:
        done = subprocess.run(
            [str(python), "-c", PREFECT_SCRIPT, str(n_chain), str(n_fan)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"the Prefect flows failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _inc(x: int) -> int:
    return x + 1


def dask_figures(n_chain: int, n_fan: int) -> dict[str, float]:
    """A local cluster of two single-threaded worker processes (this machine's cores)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(_inc, range(10), pure=False))  # warm-up
        t0 = time.perf_counter()
        x = client.submit(_inc, 0, pure=False)
        for _ in range(n_chain - 1):
            x = client.submit(_inc, x, pure=False)
        assert x.result() == n_chain
        t1 = time.perf_counter()
        assert sum(client.gather(client.map(_inc, range(n_fan), pure=False))) == (
            n_fan * (n_fan + 1) // 2
        )
        t2 = time.perf_counter()
    return {"chain_s": t1 - t0, "fanout_s": t2 - t1}


def flowdeck_figures(n_chain: int, n_fan: int) -> dict[str, float]:
    with (
        server() as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        push(c, chain_spec(n_chain))
        run_and_wait(c, "chain-bench@1")  # warm-up
        chain = run_and_wait(c, "chain-bench@1")
        assert chain["state"] == "succeeded", chain
        push(c, FANOUT)
        body = {"workflow": "fanout-bench@1", "params": {"n": list(range(n_fan))}, "start": True}
        fan = wait_for_end(c, c.post(f"{API}/runs", json=body).json()["id"])
        assert fan["state"] == "succeeded", fan
    return {"chain_s": duration(chain), "fanout_s": duration(fan)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["prefect", "dask"])
    args = parser.parse_args()
    ours = flowdeck_figures(args.chain, args.fanout)
    peers: dict[str, dict[str, float]] = {}
    if "dask" not in args.skip:
        peers["Dask"] = dask_figures(args.chain, args.fanout)
    if "prefect" not in args.skip:
        peers["Prefect 3"] = prefect_figures(args.chain, args.fanout)
    figures: list[Figure] = []
    for peer, theirs in peers.items():
        figures.append(
            Figure(
                f"chain-{args.chain}: latency per task, beside {peer}",
                ours["chain_s"] / args.chain * 1000,
                "ms",
                peer,
                theirs["chain_s"] / args.chain * 1000,
            )
        )
        figures.append(
            Figure(
                f"fan-out-{args.fanout}: wall per task, beside {peer}",
                ours["fanout_s"] / args.fanout * 1000,
                "ms",
                peer,
                theirs["fanout_s"] / args.fanout * 1000,
            )
        )
    report("peers", figures, {"seconds": {"flowdeck": ours, **peers}})


if __name__ == "__main__":
    main()
