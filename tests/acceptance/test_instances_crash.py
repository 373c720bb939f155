"""Two `flowdeck serve` instances on one PostgreSQL database and one data directory; runs
submitted round-robin, a graph, a webhook and an event-stream client active; one instance
is killed with SIGKILL at a seeded moment.  The survivor takes every run over and ends it
as it would have ended without the crash (the crash harness's invariants: tests/crashkit),
drives the graph to its end, delivers every webhook event, and the client, reconnected to
the survivor with Last-Event-ID, has seen every event once, in order."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from flowdeck.client import ApiError, Client, Reconnect
from tests.crashkit import (
    Server,
    add_workflows,
    audit,
    base_env,
    call,
    seeds,
    sign_up,
    specs,
    two_servers,
    wait_ended,
)
from tests.helpers import fresh_pg_database
from tests.receiver import receiver

SEEDS = seeds([20261205], count=0)
SHAPES = ("chain", "fanout", "long", "fails", "flaky")


class Follower:
    """An event-stream client of the user's runs that fails over to the next server."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls = urls
        self.token = token
        self.seen: list[int] = []
        self.servers_used: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        at = 0
        while not self.done.is_set():
            url = self.urls[at % len(self.urls)]
            self.servers_used.append(url)
            after = self.seen[-1] if self.seen else 0
            try:
                with Client(url, self.token) as c:
                    policy = Reconnect(max_failures=1, first_delay_s=0.1)
                    for event in c.events(after=after, reconnect=policy):
                        self.seen.append(event.id)
                        if self.done.is_set():
                            return
            except ApiError:
                at += 1  # that server is gone: the next one


@pytest.mark.parametrize("seed", SEEDS)
def test_a_server_killed_leaves_its_runs_graphs_and_streams_to_the_other(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    counters = tmp_path / "counters"
    counters.mkdir()
    shapes = specs(counters)
    with fresh_pg_database() as url, receiver() as rec:
        env = {
            **base_env(tmp_path / "data"),
            "FLOWDECK_DATABASE_URL": url,
            "FLOWDECK_LEASE_TTL_S": "3",
            "FLOWDECK_SANDBOX_EXTRA_RW": str(counters),
            "FLOWDECK_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
            "FLOWDECK_WEBHOOK_TIMEOUT_S": "2",
            "FLOWDECK_WEBHOOK_RETRY_BASE_S": "0.2",
            "FLOWDECK_WEBHOOK_RETRY_MAX_S": "1",
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a, b = Server(tmp_path / "a", env), Server(tmp_path / "b", env)
        a.start()
        b.start()
        follower: Follower | None = None
        try:
            token = sign_up(a)
            r = call(a, token, "POST", "/webhooks", json={"url": rec.url, "events": ["run.*"]})
            assert r.status_code == 201, r.text
            add_workflows(a, token, [shapes[n][0] for n in SHAPES])
            follower = Follower([a.url, b.url], token)
            expected: dict[str, str] = {}
            kinds: dict[str, str] = {}
            names = [n for n in SHAPES for _ in range(2)]
            rng.shuffle(names)
            for i, name in enumerate(names):  # round-robin
                server = (a, b)[i % 2]
                body = {"workflow": f"{name}@1", "start": True}
                run_id = call(server, token, "POST", "/runs", json=body).json()["id"]
                expected[run_id], kinds[run_id] = shapes[name][1], name
            graph = {
                "name": "pair",
                "nodes": {"first": {"workflow": "chain@1"}, "then": {"workflow": "long@1"}},
                "edges": [{"from": "first", "to": "then"}],
                "submit": True,
            }
            r = call(a, token, "POST", "/graphs", json=graph)
            assert r.status_code == 201, r.text
            graph_id = r.json()["id"]
            time.sleep(rng.uniform(0.3, 1.5))
            a.crash()

            wait_ended(b, token, expected, context=f"seed {seed}")
            deadline = time.monotonic() + 90
            while (g := call(b, token, "GET", f"/graphs/{graph_id}").json())["state"] in (
                "running",
                "stopping",
            ):
                assert time.monotonic() < deadline, f"graph not ended: {g}"
                time.sleep(0.2)
            assert g["state"] == "succeeded", g
            node_runs = {n["run_id"]: n["name"] for n in g["nodes"]}
            expected |= {run_id: "succeeded" for run_id in node_runs}
            kinds |= {run_id: f"graph node {name}" for run_id, name in node_runs.items()}
            audit(b, token, counters, expected, kinds=kinds, context=f"seed {seed}")

            # the stream client failed over to B and has every event once, in order
            truth = [
                e["id"] for e in call(b, token, "GET", "/events", params={"limit": 1000}).json()
            ]
            deadline = time.monotonic() + 30
            while follower.seen[-1:] != truth[-1:]:
                assert time.monotonic() < deadline, "the stream client lags behind"
                time.sleep(0.1)
            assert follower.seen == truth
            assert b.url in follower.servers_used

            # every run.* event reached the webhook receiver at least once
            wanted = {
                e["id"]
                for run_id in expected
                for e in call(
                    b, token, "GET", f"/runs/{run_id}/events", params={"type": "run.*"}
                ).json()
            }
            deadline = time.monotonic() + 60
            while not wanted <= (got := {json.loads(x.body)["data"]["id"] for x in rec.received()}):
                assert time.monotonic() < deadline, f"webhook events missing: {wanted - got}"
                time.sleep(0.2)
        finally:
            if follower is not None:
                follower.done.set()
            b.stop()
            a.stop()


def test_a_dead_server_of_another_host_loses_its_steps_to_a_retry_after_its_lease(
    tmp_path: Path,
) -> None:
    """Servers on two hosts (``host_id``): the survivor cannot reach the dead one's step
    processes, so once the lease (3 s) has run out it records their attempts lost and
    retries them; the run ends as it would have."""
    with fresh_pg_database() as url:
        env = {
            **base_env(tmp_path / "data"),
            "FLOWDECK_DATABASE_URL": url,
            "FLOWDECK_LEASE_TTL_S": "3",
        }
        with two_servers(tmp_path, env, hosts=("host-a", "host-b")) as (a, b):
            token = sign_up(a)
            slow = (
                'name: slow\nversion: "1"\nsteps:\n'
                "  s: {run: [sleep, '2'], retries: {count: 1, backoff: 0.1}}\n"
            )
            add_workflows(a, token, [slow])
            body = {"workflow": "slow@1", "start": True}
            run_id = call(a, token, "POST", "/runs", json=body).json()["id"]
            deadline = time.monotonic() + 30
            while call(b, token, "GET", f"/runs/{run_id}").json()["steps"].get("running") != 1:
                assert time.monotonic() < deadline, "the step did not start"
                time.sleep(0.05)
            a.crash()
            wait_ended(b, token, {run_id: "succeeded"}, context="host ids")
            [step] = call(b, token, "GET", f"/runs/{run_id}/steps").json()
            assert step["state"] == "succeeded"
            assert step["attempts"] == 2  # the first lost with host-a, retried on host-b
            types = [e["type"] for e in call(b, token, "GET", f"/runs/{run_id}/events").json()]
            assert "step.lost" in types
