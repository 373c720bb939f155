"""flowdeck's Slurm executor beside Slurm on its own, on the same cluster: the cluster of
``SLURM_CONF`` when it is set, else a private single-node cluster
(``tests/slurmcluster.py``: needs root, ``slurm-wlm`` and ``munge``).

- chain of N `/bin/true` steps through flowdeck (``default_executor = "slurm"``): latency
  per step, beside a loop of N ``sbatch --wait`` (goal: flowdeck adds at most 10 %);
- fan-out of M `/bin/true` steps: steps per second, beside one job array of M tasks
  (``sbatch --wait --array``; flowdeck submits the scatter as one job array too);
- the status cost: one poll (one ``squeue`` call, as the executor makes it) with 10 and
  with 1,000 of its jobs pending (held), in ms (goal: it does not grow with the jobs).

    python -m bench.slurm [--chain 10] [--fanout 40] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.common import Figure, median, report, scratch_dir
from bench.runs import FANOUT, chain_spec, duration, push, run_and_wait, wait_for_end
from bench.server import server
from flowdeck.executors.slurm import SlurmConfig, SlurmExecutor
from flowdeck.executors.slurm_jobs import JobOptions

API = "/api/v1"
HELD_NAME = "fd-bench-held"


def unavailable() -> str | None:
    """Why no cluster can be had here, or None."""
    if os.environ.get("SLURM_CONF"):
        return None
    from tests.slurmcluster import missing

    return missing()


@contextlib.contextmanager
def cluster() -> Iterator[None]:
    """SLURM_CONF's cluster, or a private one for the benchmark's length."""
    if os.environ.get("SLURM_CONF"):
        yield
        return
    from tests.slurmcluster import SlurmCluster

    c = SlurmCluster()
    try:
        c.start()
        os.environ.update(c.env)
        yield
    finally:
        os.environ.pop("SLURM_CONF", None)
        c.destroy()


def sbatch(*args: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", "--export=NONE", "--output=/dev/null", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=scratch_dir(),
    )
    return done.stdout.strip()


def sbatch_loop(n: int) -> float:
    """ms per ``sbatch --wait /bin/true``, one after the other."""
    t0 = time.perf_counter()
    for _ in range(n):
        sbatch("--wait", "--job-name=fd-bench-loop", "--wrap=/bin/true")
    return (time.perf_counter() - t0) / n * 1000


def sbatch_array(n: int) -> float:
    """Tasks per second of one ``sbatch --wait --array=0-(n-1)`` of /bin/true."""
    t0 = time.perf_counter()
    sbatch("--wait", f"--array=0-{n - 1}", "--job-name=fd-bench-array", "--wrap=/bin/true")
    return n / (time.perf_counter() - t0)


def poll_ms(pending: int, repeat: int = 20) -> float:
    """Median ms of one poll of the executor with ``pending`` of its jobs held."""
    name = f"{HELD_NAME}-{pending}"  # cancelled jobs stay listed a while (MinJobAge)
    for _ in range(pending):
        sbatch("--hold", f"--job-name={name}", "--wrap=/bin/true")
    ex = SlurmExecutor(SlurmConfig(JobOptions(job_name=name)))

    async def polls() -> list[float]:
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            jobs = await ex.squeue_all()
            out.append((time.perf_counter() - t0) * 1000)
            assert jobs is not None
            assert len(jobs) == pending, (len(jobs), pending)
        return out

    try:
        return median(asyncio.run(polls()))
    finally:
        subprocess.run(["scancel", f"--name={name}"], check=False)
        while subprocess.run(
            ["squeue", "-h", f"--name={name}", "-t", "PD"], capture_output=True, text=True
        ).stdout.strip():
            time.sleep(0.2)


def through_flowdeck(chain: int, fanout: int, poll_s: float) -> tuple[float, float]:
    """(chain ms per step, fan-out steps per second) of runs on Slurm."""
    settings = {"slurm": "true", "default_executor": "slurm", "slurm_poll_s": str(poll_s)}
    with (
        server(**settings) as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        push(c, chain_spec(chain))
        push(c, FANOUT)
        status = run_and_wait(c, "chain-bench@1")
        assert status["state"] == "succeeded", status
        per_step = duration(status) / chain * 1000
        body = {"workflow": "fanout-bench@1", "params": {"n": list(range(fanout))}}
        run_id = c.post(f"{API}/runs", json={**body, "start": True}).json()["id"]
        status = wait_for_end(c, run_id)
        assert status["state"] == "succeeded", status
        rate = fanout / duration(status)
    return per_step, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--fanout", type=int, default=40)
    parser.add_argument("--poll", type=float, default=0.5, help="slurm_poll_s of the server")
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        print(f"== slurm: not run: {reason}")
        return
    with cluster():
        print(f"  Slurm: {os.environ.get('SLURM_CONF', '(default slurm.conf)')}", flush=True)
        loop_ms = sbatch_loop(args.chain)
        array_rate = sbatch_array(args.fanout)
        print(f"  sbatch --wait loop: {loop_ms:.0f} ms/job; array: {array_rate:.2f} tasks/s")
        chain_ms, fan_rate = through_flowdeck(args.chain, args.fanout, args.poll)
        print(f"  flowdeck: chain {chain_ms:.0f} ms/step; fan-out {fan_rate:.2f} steps/s")
        few = poll_ms(10)
        many = poll_ms(1000)
    figures = [
        Figure(
            f"chain-{args.chain}: latency per step",
            chain_ms,
            "ms",
            "sbatch --wait loop",
            loop_ms,
            goal="<= 1.10 x",
        ),
        Figure(
            f"fan-out-{args.fanout}: steps per second",
            fan_rate,
            "1/s",
            "one sbatch --array",
            array_rate,
            goal=">= 0.90 x",
        ),
        Figure("one poll, 1,000 jobs pending", many, "ms", "10 jobs pending", few),
    ]
    report("slurm", figures, {"slurm_poll_s": args.poll, "data": str(Path(scratch_dir()))})


if __name__ == "__main__":
    main()
