"""Fair share and quotas as a lab uses them: a real `flowdeck serve` with two slots,
accounts and quotas made with `flowdeck admin …`, runs submitted through the SDK, what
users see through the CLI (`whoami`, `run status`, `run list`)."""

from __future__ import annotations

import contextlib
import itertools
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowdeck.client import Client
from flowdeck.client.errors import ApiError
from tests.acceptance.test_quickstart import EXE, Terminal
from tests.helpers import STRONG
from tests.serving import serve

SLEEP = 'name: nap\nversion: "1"\nsteps:\n  main:\n    run: [sleep, "0.3"]\n'
# Two one-slot steps that could run side by side, each long enough to overlap.
PAIR = (
    'name: pair\nversion: "1"\nsteps:\n'
    '  a:\n    run: [sleep, "1"]\n    resources: {cpus: 1}\n'
    '  b:\n    run: [sleep, "1"]\n    resources: {cpus: 1}\n'
)
HOLD = 'name: hold\nversion: "1"\nsteps:\n  main:\n    run: [sleep, "120"]\n'
UPLOAD = (
    'name: keep\nversion: "1"\ninputs:\n  data: {type: array, items: file}\n'
    "steps:\n  main:\n    run: [true]\n"
)


class Lab:
    def __init__(self, sh: Terminal, url: str) -> None:
        self.sh = sh
        self.url = url
        self.clients: list[Client] = []

    def user(self, name: str) -> Client:
        """A new account (made by the operator), logged in through the SDK and the CLI."""
        self.sh("admin", "create-user", name, stdin=f"{STRONG}\n{STRONG}\n")
        client = Client(self.url)
        self.clients.append(client)
        client.login(name, STRONG)
        return client


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    sh = Terminal(tmp_path)
    with serve(tmp_path, env={"FLOWDECK_SLOTS": "2"}, command=[str(EXE)]) as (url, _log):
        lab = Lab(sh, url)
        yield lab
        for client in lab.clients:
            client.close()


def until(check: Any, what: str, timeout: float = 60) -> Any:
    """Poll ``check()`` until it returns something true (a wait, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def test_one_run_of_another_user_starts_within_a_run_of_a_thousand_queued(lab: Lab) -> None:
    a, b = lab.user("ann"), lab.user("bob")
    for c in (a, b):
        c.push_workflow(_spec(lab, "nap.yaml", SLEEP))
    queued = [a.create_run("nap@1", start=True).id for _ in range(200)]
    until(lambda: a.run(queued[1]).status()["state"] != "queued", "ann's first runs to start")
    mine = b.create_run("nap@1", start=True)
    assert mine.wait(timeout=60)["state"] == "succeeded"
    started = [e for e in a.list_events(types=["run.running"], limit=None)]
    bobs = b.list_events(runs=[mine.id], limit=None)
    queued_at = next(e.id for e in bobs if e.type == "run.queued")
    running_at = next(e.id for e in bobs if e.type == "run.running")
    # Ann's runs that started while Bob's waited: at most one per slot (those whose slot
    # freed in the tick that started Bob's), not the ~195 queued before it.
    overtook = [e for e in started if queued_at < e.id < running_at]
    assert len(overtook) <= 2, overtook
    assert len([e for e in started if e.id < running_at]) < 20
    for run_id in queued:  # the rest go: the server stops quickly
        with contextlib.suppress(ApiError):  # ended meanwhile
            a.run(run_id).stop()


def _spec(lab: Lab, name: str, text: str) -> Path:
    path = lab.sh.home / name
    path.write_text(text)
    return path


def test_a_run_past_the_active_runs_quota_waits_queued_and_says_why(lab: Lab) -> None:
    c = lab.user("cat")
    lab.sh("admin", "quota", "set", "cat", "--max-active-runs", "1")
    c.push_workflow(_spec(lab, "hold.yaml", HOLD))
    first = c.create_run("hold@1", start=True)
    second = c.create_run("hold@1", start=True)
    reason = "quota: 1 of 1 active runs"
    until(lambda: second.status().get("waiting") == reason, "the reason on the second run")
    assert first.status()["state"] == "running" and second.data["state"] == "queued"
    lab.sh("login", "--server", lab.url, "-u", "cat", stdin=f"{STRONG}\n")
    assert f"waiting: {reason}" in lab.sh("run", "status", second.id)
    listed = lab.sh("run", "list")
    assert reason in listed, listed
    whoami = lab.sh("whoami")
    assert "active runs: 1 of 1 (1 queued)" in whoami
    assert "CPU slots in use: 1 of no limit" in whoami
    me = c.me()
    assert me["quota"]["max_active_runs"] == 1 and me["usage"]["active_runs"] == 1
    first.stop()
    until(lambda: second.status()["state"] == "running", "the second run to start")
    assert second.data["waiting"] is None
    second.stop()
    events = c.list_events(runs=[first.id, second.id], types=["run.*"], limit=None)
    ended = next(e.id for e in events if e.run_id == first.id and e.type == "run.cancelled")
    began = next(e.id for e in events if e.run_id == second.id and e.type == "run.running")
    assert ended < began


def test_steps_past_the_cpu_quota_wait_for_the_users_own_steps(lab: Lab) -> None:
    d = lab.user("dan")
    lab.sh("admin", "quota", "set", "dan", "--max-cpus", "1")
    d.push_workflow(_spec(lab, "pair.yaml", PAIR))
    first = d.create_run("pair@1", start=True)
    second = d.create_run("pair@1", start=True)
    reason = "quota: 1 of 1 CPU slots in use"
    until(lambda: second.status().get("waiting") == reason, "the CPU reason on the second run")
    assert d.me()["usage"]["cpus"] == 1
    for run in (first, second):
        assert run.wait(timeout=60)["state"] == "succeeded"
    # two free slots, but the user's steps ran one at a time
    spans = sorted((s["started_at"], s["ended_at"]) for run in (first, second) for s in run.steps())
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))


def test_an_upload_past_the_stored_bytes_quota_is_refused_and_changes_nothing(lab: Lab) -> None:
    e = lab.user("eve")
    lab.sh("admin", "quota", "set", "eve", "--max-stored-bytes", "1k")
    e.push_workflow(_spec(lab, "keep.yaml", UPLOAD))
    run = e.create_run("keep@1")
    run.upload("data", _spec(lab, "small.bin", "x" * 600))
    with pytest.raises(ApiError) as refused:
        run.upload("data", _spec(lab, "more.bin", "y" * 600))
    assert refused.value.status == 413
    assert "quota exceeded: stored bytes 1.2 kB of 1.0 kB" in str(refused.value)
    assert [f["filename"] for f in run.files()] == ["small.bin"]
    assert e.me()["usage"]["stored_bytes"] == 600
    listed = lab.sh.json("admin", "quota", "show", "eve")
    assert listed[0]["usage"]["stored_bytes"] == 600
    assert listed[0]["override"]["max_stored_bytes"] == 1024
    status = lab.sh.json("admin", "status")
    assert status["disk"]["stored_bytes_by_user"] == {"eve": 600}
    lab.sh("admin", "quota", "set", "eve", "--reset")
    run.upload("data", lab.sh.home / "more.bin")  # the default: no limit
    assert len(run.files()) == 2


def _archive(lab: Lab, name: str, payload: int) -> tuple[Path, int]:
    """A workflow archive whose script is ``payload`` bytes: its path and its files' size."""
    spec = f'name: {name}\nversion: "1"\nsteps:\n  main:\n    run: [sh, blob.sh]\n'
    script = "#" * (payload - 1) + "\n"
    path = lab.sh.home / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flowdeck.yaml", spec)
        zf.writestr("blob.sh", script)
    return path, len(spec) + len(script)


def test_workflow_archives_count_in_stored_bytes(lab: Lab) -> None:
    """A workflow archive's files count in its owner's stored bytes: one past the quota
    is refused (413) and not stored."""
    a = lab.user("ari")
    lab.sh("admin", "quota", "set", "ari", "--max-stored-bytes", "1k")
    first, size = _archive(lab, "packed", 600)
    a.push_workflow(first)
    assert a.me()["usage"]["stored_bytes"] == size
    second, _ = _archive(lab, "toobig", 600)
    with pytest.raises(ApiError) as refused:
        a.push_workflow(second)
    assert refused.value.status == 413
    assert "quota exceeded: stored bytes" in str(refused.value)
    assert [w["name"] for w in a.workflows()] == ["packed"]
    assert a.me()["usage"]["stored_bytes"] == size
