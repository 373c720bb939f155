"""Backup and restore with real ``flowdeck serve`` processes: a backup taken while runs
execute, restored into a new data directory, serves every run, event and product, and the
users' secrets where the key came along."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from flowdeck.client import Client
from tests.helpers import STRONG
from tests.serving import serve

PRODUCE = """name: produce
version: "1"
steps:
  make:
    run: [sh, -c, "echo hello from the old server > out.txt"]
    outputs:
      out: {path: out.txt}
"""
SLEEPY = """name: sleepy
version: "1"
steps:
  nap:
    run: [sh, -c, "sleep 4; echo rested > rested.txt"]
    outputs:
      rested: {path: rested.txt}
"""
SECRETIVE = """name: secretive
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
"""
TOKEN = "s3cr3t-value-for-the-backup-test"
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}


def admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``flowdeck admin …`` on the data directory ``data``, as an operator runs it."""
    env = {**os.environ, "FLOWDECK_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "flowdeck", "admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def history(client: Client, run_id: str) -> list[tuple[int, str]]:
    return [(e.id, e.type) for e in client.run(run_id).list_events(limit=None)]


def secret_sha(client: Client) -> dict[str, Any]:
    return client.create_run("secretive@1", start=True).wait(timeout=120)


def test_backup_under_load_restores_every_run_event_and_product(tmp_path: Path) -> None:
    old, new, keyless = tmp_path / "old", tmp_path / "new", tmp_path / "keyless"
    for name, text in (("produce", PRODUCE), ("sleepy", SLEEPY), ("secretive", SECRETIVE)):
        (tmp_path / f"{name}.yaml").write_text(text)
    backup, without_key = tmp_path / "backup.tar", tmp_path / "nokey.tar.gz"
    with (
        serve(tmp_path, "--data-dir", str(old), "--registration", "open") as (url, _),
        Client(url) as c,
    ):
        c.register("ada", STRONG)
        token = c.login("ada", STRONG)["token"]
        c.set_secret("token", TOKEN)
        for name in ("produce", "sleepy", "secretive"):
            c.push_workflow(tmp_path / f"{name}.yaml")
        done = [c.create_run("produce@1", start=True) for _ in range(3)]
        for run in done:
            assert run.wait(timeout=120)["state"] == "succeeded"
        assert secret_sha(c)["outputs"]["sha"].strip() == sha(TOKEN)
        busy = [c.create_run("sleepy@1", start=True) for _ in range(2)]
        staged = c.create_run("produce@1")
        deadline = time.monotonic() + 60
        while not all(c.run(r.id).state == "running" for r in busy):
            assert time.monotonic() < deadline, "the sleepy runs did not start"
            time.sleep(0.05)
        events = {run.id: history(c, run.id) for run in done}
        # the backups, while the sleepy runs execute
        made = admin(old, "backup", str(backup), "--include-key")
        assert made.returncode == 0, made.stderr
        assert "backed up the sqlite database" in made.stdout
        made = admin(old, "backup", str(without_key))
        assert made.returncode == 0 and "secret key is not in it" in made.stdout
        # the backup changed nothing: the runs go on and end as they would have
        for run in busy:
            assert run.wait(timeout=120)["state"] == "succeeded"
    with tarfile.open(backup) as tar:
        names = tar.getnames()
    assert "secret.key" in names and not any(n.startswith("data/tmp/") for n in names)
    with tarfile.open(without_key) as tar:
        assert "secret.key" not in tar.getnames()

    # restore refuses a data directory in use, and says why
    refused = admin(old, "restore", str(backup))
    assert refused.returncode != 0 and "is not empty" in refused.stderr
    restored = admin(new, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr

    with serve(tmp_path, "--data-dir", str(new)) as (url, _), Client(url, token) as c:
        for run in done:  # every run, its events and its product, as they were
            found = c.run(run.id)
            assert found.state == "succeeded"
            assert history(c, run.id)[: len(events[run.id])] == events[run.id]
            product = found.products()[0]
            got = found.download(product, tmp_path / f"{run.id}.txt")
            assert got.read_text() == "hello from the old server\n"
        assert c.run(staged.id).state == "staged"
        # the runs that were executing during the backup: taken over, and they end
        for run in busy:
            assert c.run(run.id).wait(timeout=180)["state"] in TERMINAL
        # the key came along: the secret is readable by a new run's step
        assert secret_sha(c)["outputs"]["sha"].strip() == sha(TOKEN)

    restored = admin(keyless, "restore", str(without_key))
    assert restored.returncode == 0 and "holds no secret key" in restored.stdout
    with serve(tmp_path, "--data-dir", str(keyless)) as (url, _), Client(url, token) as c:
        assert c.run(done[0].id).state == "succeeded"
        # without its key the stored secret cannot be read: a step using it fails
        assert secret_sha(c)["state"] != "succeeded"

    # the operator puts the key kept apart in place before the first start: readable
    provided = tmp_path / "provided"
    assert admin(provided, "restore", str(without_key)).returncode == 0
    shutil.copy2(old / "secret.key", provided / "secret.key")
    with serve(tmp_path, "--data-dir", str(provided)) as (url, _), Client(url, token) as c:
        assert secret_sha(c)["outputs"]["sha"].strip() == sha(TOKEN)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
