"""Moving to PostgreSQL: a SQLite store with runs in every state, copied by ``flowdeck
admin copy-store`` once its server stopped, serves the same runs, events, accounts, tokens
and secrets from PostgreSQL, and its running steps are taken over.  Runs in the states a
test cannot hold still (``stopping``, ``system_error``) are written into the store before
the copy and compared in both stores."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from flowdeck.client import Client
from flowdeck.domain.runs import RunState
from flowdeck.ids import new_id
from flowdeck.store import open_store
from tests.helpers import STRONG, fresh_pg_database
from tests.serving import serve

WORKFLOWS = {
    "produce": """name: produce
version: "1"
steps:
  make:
    run: [sh, -c, "echo made > out.txt"]
    outputs:
      out: {path: out.txt}
""",
    "failing": 'name: failing\nversion: "1"\nsteps:\n  boom:\n    run: [sh, -c, "exit 3"]\n',
    "sleepy": 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "300"]\n',
    "napper": 'name: napper\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "8"]\n',
    "secretive": """name: secretive
version: "1"
outputs:
  sha: {from: "${{ steps.use.outputs.sha }}"}
steps:
  use:
    shell: bash
    run: printf %s "$TOKEN" | sha256sum | cut -c1-64
    secrets:
      - {name: token, env: TOKEN}
    outputs:
      sha: {stdout: text}
""",
}
TOKEN = "copied-secret-value"
ENDED = {"succeeded", "failed", "cancelled", "killed", "system_error"}
SHOWN = ("id", "workflow", "owner_id", "state", "created_at", "finished_at", "outputs", "error")


def copy_store(data: Path, to: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOWDECK_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "flowdeck", "admin", "copy-store", "--to", to],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def until(c: Client, run_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (status := c.run(run_id).data)["state"] not in states:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def stepping(c: Client, run_id: str) -> None:
    """Until the run's step runs (not only the run)."""
    deadline = time.monotonic() + 60
    while not any(s["state"] == "running" for s in c.run(run_id).steps()):
        assert time.monotonic() < deadline, c.run(run_id).steps()
        time.sleep(0.05)


def seen(c: Client) -> dict[str, Any]:
    """Every run (its status's stable fields and its events) as the API shows them."""
    return {
        r.id: (
            {k: c.run(r.id).data[k] for k in SHOWN},
            [(e.id, e.type, e.data) for e in r.list_events(limit=None)],
        )
        for r in c.runs(limit=None)
    }


def test_copy_store_to_postgresql_keeps_runs_events_accounts_and_secrets(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    for name, text in WORKFLOWS.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    data_args = ("--data-dir", str(data), "--slots", "2")  # two steps at once
    with fresh_pg_database() as pg:
        with (
            serve(tmp_path, *data_args, "--registration", "open") as (url, _),
            Client(url) as c,
        ):
            c.register("ada", STRONG)
            token = c.login("ada", STRONG)["token"]
            c.set_secret("token", TOKEN)
            for name in WORKFLOWS:
                c.push_workflow(tmp_path / f"{name}.yaml")
            runs = {
                "succeeded": c.create_run("produce@1", start=True),
                "failed": c.create_run("failing@1", start=True),
                "staged": c.create_run("produce@1"),
                "killed": c.create_run("sleepy@1", start=True),
                "cancelled": c.create_run("sleepy@1", start=True),
            }
            for state in ("succeeded", "failed"):
                assert runs[state].wait(timeout=60)["state"] == state
            for state in ("killed", "cancelled"):
                until(c, runs[state].id, {"running"})
            runs["killed"].kill()
            runs["cancelled"].stop(grace_s=0)
            for state in ("killed", "cancelled"):  # their slots are free again
                until(c, runs[state].id, {state})
            runs["paused"] = c.create_run("napper@1", start=True)
            runs["running"] = c.create_run("napper@1", start=True)
            for state in ("paused", "running"):  # each step holds one of the two slots
                stepping(c, runs[state].id)
            runs["paused"].pause()
            runs["queued"] = c.create_run("produce@1", start=True)  # no slot free: it waits
            for state in ("paused", "queued"):
                until(c, runs[state].id, {state})
            before = seen(c)
            # a running server's store is not copied
            refused = copy_store(data, pg)
            assert refused.returncode != 0 and "stop it first" in refused.stderr
        # the states a test cannot hold still, written as a server would have left them
        sqlite = open_store(f"sqlite:///{data / 'flowdeck.db'}")
        try:
            with sqlite.write() as tx:
                model = tx.get_run(runs["succeeded"].id)
                assert model is not None
                odd = {
                    state: dataclasses.replace(model, id=new_id("run"), state=state)
                    for state in (RunState.STOPPING, RunState.SYSTEM_ERROR)
                }
                tx.add_runs(list(odd.values()))
            with sqlite.read() as tx:
                written = {r.id: tx.get_run(r.id) for r in odd.values()}
        finally:
            sqlite.close()
        copied = copy_store(data, pg)  # stopped: its steps go on under their supervisor
        assert copied.returncode == 0, copied.stderr
        assert "copied" in copied.stdout
        again = copy_store(data, pg)
        assert again.returncode != 0 and "is not empty" in again.stderr

        postgres = open_store(pg)
        try:
            with postgres.read() as tx:
                assert {run_id: tx.get_run(run_id) for run_id in written} == written
        finally:
            postgres.close()

        args = (*data_args, "--database-url", pg)
        with serve(tmp_path, *args) as (url, _), Client(url, token) as c:
            assert c.me()["username"] == "ada"  # the token works
            with httpx.Client(base_url=url) as anon:
                login = {"username": "ada", "password": STRONG}
                assert anon.post("/api/v1/auth/login", json=login).status_code == 200
            after = seen(c)
            assert after.keys() == before.keys() | written.keys()
            for run_id, (status, events) in before.items():
                if status["state"] in ENDED:  # as they were
                    assert after[run_id] == (status, events)
                else:  # active ones went on from where they were
                    assert after[run_id][1][: len(events)] == events
            assert c.run(runs["staged"].id).state == "staged"
            assert c.run(runs["paused"].id).state == "paused"
            c.run(runs["paused"].id).resume()
            for state in ("paused", "running", "queued"):  # taken over, and they finish
                assert c.run(runs[state].id).wait(timeout=120)["state"] == "succeeded"
            product = c.run(runs["succeeded"].id).products()[0]
            got = c.run(runs["succeeded"].id).download(product, tmp_path / "out.txt")
            assert got.read_text() == "made\n"
            # the secret, encrypted as it was, is read with the same key
            done = c.create_run("secretive@1", start=True).wait(timeout=120)
            assert done["outputs"]["sha"].strip() == hashlib.sha256(TOKEN.encode()).hexdigest()
            # new ids go on after the copied ones
            fresh = c.create_run("produce@1", start=True)
            fresh.wait(timeout=60)
            last = max(e[0] for _, events in before.values() for e in events)
            assert min(e.id for e in fresh.list_events()) > last
