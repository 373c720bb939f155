"""A kill -9 of the server in the middle of a graph and of a rerun: after a restart on the
same data, both go on from what was committed — their running steps re-adopted, not run
again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import STRONG, free_port

API = "/api/v1"
WORKFLOWS = [
    'name: quick\nversion: "1"\nsteps:\n  main:\n    run: [echo, hi]\n',
    'name: nap\nversion: "1"\nsteps:\n  main:\n    run: [sleep, "3"]\n',
    """
name: three
version: "1"
inputs:
  wait: {type: string, default: "0"}
outputs:
  out: {from: "${{ steps.c.outputs.out }}"}
steps:
  a:
    run: [sh, -c, 'echo a > a.txt']
    outputs: {out: {path: a.txt}}
  b:
    run: [sh, -c, 'sleep "$0"; cat "$1" > b.txt; echo b >> b.txt', "${{ inputs.wait }}",
          "${{ steps.a.outputs.out }}"]
    outputs: {out: {path: b.txt}}
  c:
    run: [sh, -c, 'cat "$0" > c.txt; echo c >> c.txt', "${{ steps.b.outputs.out }}"]
    outputs: {out: {path: c.txt}}
""",
]


@contextmanager
def server(data: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "FLOWDECK_DATA_DIR": str(data), "FLOWDECK_REGISTRATION": "open"}
    log = (data.parent / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowdeck", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        log.close()


def poll(c: httpx.Client, path: str, ok: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = c.get(API + path).json()
        if ok(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def node_states(graph: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["state"] for n in graph["nodes"]}


def login(url: str, first: bool) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30)
    if first:
        r = c.post(f"{API}/auth/register", json={"username": "crash", "password": STRONG})
        assert r.status_code == 201, r.text
    r = c.post(f"{API}/auth/login", json={"username": "crash", "password": STRONG})
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return c


def test_a_graph_and_a_rerun_survive_a_kill_9_of_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with server(data) as (url, proc), closing(login(url, True)) as c:
        for text in WORKFLOWS:
            r = c.post(f"{API}/workflows", content=text, headers={"content-type": "text/yaml"})
            assert r.status_code in (200, 201), r.text
        graph = c.post(
            f"{API}/graphs",
            json={
                "nodes": {
                    "first": {"workflow": "quick@1"},
                    "slow": {"workflow": "nap@1"},
                    "after": {"workflow": "quick@1"},
                    "strict": {"workflow": "quick@1"},
                },
                "edges": [
                    {"from": "first", "to": "slow"},
                    {"from": "slow", "to": "after", "condition": "completed"},
                    {"from": "slow", "to": "strict"},
                ],
                "submit": True,
            },
        ).json()
        poll(c, f"/graphs/{graph['id']}", lambda g: node_states(g)["slow"] == "running")
        clean = c.post(f"{API}/runs", json={"workflow": "three@1", "start": True}).json()
        poll(c, f"/runs/{clean['id']}", lambda r: r["state"] == "succeeded")
        rerun = c.post(f"{API}/runs/{clean['id']}/rerun", json={"params": {"wait": "3"}})
        assert rerun.status_code == 201, rerun.text
        rerun_id = rerun.json()["id"]
        poll(c, f"/runs/{rerun_id}", lambda r: "b" in r["current_steps"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    with server(data) as (url, _proc), closing(login(url, False)) as c:
        g = poll(c, f"/graphs/{graph['id']}", lambda g: g["state"] != "running")
        # the interrupted node's step went on under the supervisor and was re-adopted:
        # the graph finished as if nothing had happened
        assert node_states(g) == {
            "first": "succeeded",
            "slow": "succeeded",
            "after": "succeeded",
            "strict": "succeeded",
        }
        assert g["state"] == "succeeded"
        done = poll(c, f"/runs/{rerun_id}", lambda r: r["state"] in ("succeeded", "failed"))
        assert done["state"] == "succeeded", done
        steps = {s["label"]: s for s in c.get(f"{API}/runs/{rerun_id}/steps").json()}
        assert {k: v["state"] for k, v in steps.items()} == {
            "a": "cached",
            "b": "succeeded",
            "c": "cached",  # b wrote what it wrote in the clean run
        }
        assert steps["b"]["attempts"] == 1  # re-adopted, not started again
        # rerunning the rerun reuses everything
        again = c.post(f"{API}/runs/{rerun_id}/rerun").json()
        done = poll(c, f"/runs/{again['id']}", lambda r: r["state"] in ("succeeded", "failed"))
        assert done["state"] == "succeeded", done
        steps = {s["label"]: s["state"] for s in c.get(f"{API}/runs/{again['id']}/steps").json()}
        assert steps == {"a": "cached", "b": "cached", "c": "cached"}
        products = {
            p["name"]: p["sha256"] for p in c.get(f"{API}/runs/{clean['id']}/products").json()
        }
        again_products = {
            p["name"]: p["sha256"] for p in c.get(f"{API}/runs/{again['id']}/products").json()
        }
        assert again_products == products
