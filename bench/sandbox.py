"""What the step sandbox costs: the chain and fan-out of bench/runs.py with ``sandbox =
"off"``, a sandbox per run (``sandbox_scope = "run"``, the default) and a bwrap per step
(``sandbox_scope = "step"``) side by side, each on a fresh server, beside the cost of one
bare ``bwrap`` start measured here.

- chain of N `/bin/true` steps: latency per step (goal: the sandbox adds <= 1 ms);
- fan-out of M `/bin/true` steps: wall time per step.

    python -m bench.sandbox [--chain 40] [--fanout 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import httpx

from bench.common import Figure, median, report
from bench.runs import (
    FANOUT,
    TRUE,
    bwrap_true,
    chain_spec,
    duration,
    push,
    run_and_wait,
    wait_for_end,
)
from bench.server import server

API = "/api/v1"


def bare_bwrap_ms(n: int = 100) -> tuple[float, float]:
    """(ms per plain /bin/true, ms per /bin/true in a bwrap with the step namespaces)."""
    out = []
    for argv in (TRUE, bwrap_true()):
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(argv, check=True, start_new_session=True)
        out.append((time.perf_counter() - t0) / n * 1000)
    return out[0], out[1]


def measure(mode: str, chain: int, fanout: int, repeat: int) -> tuple[float, float]:
    """(chain ms per step, fan-out ms per step), medians of ``repeat`` runs; ``mode``: off,
    run or step."""
    chains: list[float] = []
    fans: list[float] = []
    settings = {"sandbox": "off"} if mode == "off" else {"sandbox_scope": mode}
    with (
        server(**settings) as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        push(c, chain_spec(chain))
        push(c, FANOUT)
        run_and_wait(c, "chain-bench@1")  # warm-up
        for _ in range(repeat):
            status = run_and_wait(c, "chain-bench@1")
            assert status["state"] == "succeeded", status
            chains.append(duration(status) / chain * 1000)
            body = {"workflow": "fanout-bench@1", "params": {"n": list(range(fanout))}}
            run_id = c.post(f"{API}/runs", json={**body, "start": True}).json()["id"]
            status = wait_for_end(c, run_id)
            assert status["state"] == "succeeded", status
            fans.append(duration(status) / fanout * 1000)
    print(f"  sandbox={mode}: chain {chains} ms/step, fan-out {fans} ms/step")
    return median(chains), median(fans)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plain, boxed = bare_bwrap_ms()
    off = measure("off", args.chain, args.fanout, args.repeat)
    per_run = measure("run", args.chain, args.fanout, args.repeat)
    per_step = measure("step", args.chain, args.fanout, args.repeat)
    figures = [Figure("bare start: bwrap /bin/true", boxed, "ms", "/bin/true", plain)]
    for name, on in (("a sandbox per run", per_run), ("a bwrap per step", per_step)):
        figures += [
            Figure(
                f"chain-{args.chain}: latency per step, {name}",
                on[0],
                "ms",
                "sandbox=off",
                off[0],
                goal="<= 1 ms added" if on is per_run else "",
            ),
            Figure(f"chain-{args.chain}: added per step, {name}", on[0] - off[0], "ms", "", 0),
            Figure(
                f"fan-out-{args.fanout}: wall per step, {name}",
                on[1],
                "ms",
                "sandbox=off",
                off[1],
            ),
        ]
    report("sandbox", figures)


if __name__ == "__main__":
    main()
