"""Composition benchmarks, each beside a baseline measured in the same run:

- a chain graph of N single-step nodes: time per node from submit to the graph's end,
  beside the same N runs chained by a client (create, poll until done, next);
- a rerun of a chain of 40 `/bin/true` steps where every step is cached: time per step,
  beside the clean run of the same workflow.

    python -m bench.graphs [--nodes 20] [--chain 40]
"""

from __future__ import annotations

import argparse
import time

import httpx

from bench.common import Figure, report
from bench.runs import chain_spec, duration, push, run_and_wait
from bench.server import server

API = "/api/v1"


def graph_chain(c: httpx.Client, n: int) -> float:
    nodes = {f"n{i}": {"workflow": "one@1"} for i in range(n)}
    edges = [{"from": f"n{i - 1}", "to": f"n{i}"} for i in range(1, n)]
    t0 = time.perf_counter()
    r = c.post(f"{API}/graphs", json={"nodes": nodes, "edges": edges, "submit": True})
    r.raise_for_status()
    graph_id = r.json()["id"]
    while c.get(f"{API}/graphs/{graph_id}").json()["state"] == "running":
        time.sleep(0.01)
    return time.perf_counter() - t0


def client_chain(c: httpx.Client, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        run_id = c.post(f"{API}/runs", json={"workflow": "one@1", "start": True}).json()["id"]
        while c.get(f"{API}/runs/{run_id}").json()["state"] in ("queued", "running"):
            time.sleep(0.01)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--chain", type=int, default=40)
    args = parser.parse_args()
    figures: list[Figure] = []
    with (
        server() as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        push(c, 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n')
        graph_chain(c, 3)  # warm-up
        graph_s = graph_chain(c, args.nodes)
        client_s = client_chain(c, args.nodes)
        figures.append(
            Figure(
                f"graph chain of {args.nodes} runs: per node",
                graph_s / args.nodes * 1000,
                "ms",
                "client-chained runs",
                client_s / args.nodes * 1000,
            )
        )
        push(c, chain_spec(args.chain))
        clean = run_and_wait(c, "chain-bench@1")
        assert clean["state"] == "succeeded", clean
        r = c.post(f"{API}/runs/{clean['id']}/rerun")
        r.raise_for_status()
        rerun_id = r.json()["id"]
        while (status := c.get(f"{API}/runs/{rerun_id}").json())["state"] in (
            "queued",
            "running",
        ):
            time.sleep(0.02)
        assert status["steps"] == {"cached": args.chain}, status
        figures.append(
            Figure(
                f"rerun of chain-{args.chain}, all cached: per step",
                duration(status) / args.chain * 1000,
                "ms",
                "clean run per step",
                duration(clean) / args.chain * 1000,
            )
        )
    report("graphs", figures, {"nodes": args.nodes, "chain": args.chain})


if __name__ == "__main__":
    main()
