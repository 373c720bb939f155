"""The sandbox of a server that does not run as root: bwrap in an unprivileged user
namespace, steps as the server's own user — in a bwrap of their own and in their run's
sandbox.  Run as root (CI), the executor is started as ``nobody`` with the system's
Python 3.11 (root's interpreter may sit in a folder ``nobody`` cannot enter)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

# Runs as the unprivileged user: two steps of one run, the first in a bwrap of its own, the
# later in the run's sandbox; each tries what it must not do and prints what it saw.
SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path
from flowdeck.executors.base import Launch
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.runbox import BoxedProcess
from flowdeck.executors.sandbox import plan

root, outer, private = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
work, tmp = root / "run" / "work", root / "run" / "tmp"
work.mkdir(parents=True)
tmp.mkdir()
probe = (
    "id -u; "
    f"kill -0 {outer} 2>/dev/null && echo SIGNALLED-OUTSIDE; "
    f"cat {private} 2>/dev/null && echo READ-PRIVATE; "
    "touch ../../outside 2>/dev/null; "  # the sandbox's own root (a tmpfs), not the host's
    "touch mine && echo wrote-own; "
    "grep -q '^python' /proc/2/comm && echo IN-RUN-SANDBOX; "
    "ls /proc | grep -c '^[0-9]'"
)
count = 0

def launch(script):
    global count
    count += 1
    cwd = work / f"s{count}"
    cwd.mkdir()
    spec = plan(ro=[work], rw=[cwd, tmp], grant=[], deny=[], network=False,
                step_user="flowdeck-step", step_uids=None, max_processes=None,
                work=work, box=True)
    return Launch(key=f"run/s{count}/0/1", cwd=cwd, env={"PATH": "/usr/bin:/bin"},
                  stdout=cwd / "out", stderr=cwd / "err", argv=("/bin/sh", "-c", script),
                  sandbox=spec)

async def step(ex, script):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    lc = launch(script)
    proc = ex.start(lc, lambda o: done.done() or done.set_result(o), loop)
    return proc, lc, done

async def main():
    ex = LocalExecutor()
    report = {}
    try:
        proc, lc, done = await step(ex, probe)
        await done
        report["own"] = [type(proc).__name__, lc.stdout.read_text().split()]
        for _ in range(500):  # until the run's sandbox is up
            proc, lc, done = await step(ex, probe)
            o = await done
            if isinstance(proc, BoxedProcess):
                break
            await asyncio.sleep(0.02)
        report["boxed"] = [type(proc).__name__, lc.stdout.read_text().split(), o.exit_code]
        proc, lc, done = await step(ex, "sleep 60")
        for _ in range(500):
            if proc.pid is not None:
                break
            await asyncio.sleep(0.01)
        proc.kill()
        report["killed"] = (await done).signal
    finally:
        ex.close()
    print(json.dumps(report))

asyncio.run(main())
"""


def test_an_unprivileged_servers_steps_are_sandboxed_in_a_user_namespace() -> None:
    root = Path(tempfile.mkdtemp(prefix="flowdeck-unpriv-"))
    try:
        private = root / "private.txt"  # outside every mount of the steps
        private.write_text("private\n")
        # flowdeck's executors need only the standard library: a copy of the package in
        # a folder the user can read (a fresh clone may sit under a private one)
        code = root / "code"
        shutil.copytree(
            REPO / "src" / "flowdeck",
            code / "flowdeck",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code)}
        argv = [sys.executable, "-c", SCRIPT]
        if os.geteuid() == 0:
            system = shutil.which("python3.11", path="/usr/bin:/bin")
            if system is None:
                pytest.skip("needs the system's python3.11 to run as nobody")
            argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            argv += [system, "-c", SCRIPT]
            for path in (root, *root.rglob("*")):
                if path != private:
                    os.chown(path, NOBODY, NOBODY)
            os.chmod(root, 0o755)
        done = subprocess.run(
            [*argv, str(root), str(os.getpid()), str(private)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        uid = os.getuid() if os.geteuid() != 0 else NOBODY
        kind, seen = report["own"]
        assert kind == "LocalProcess"
        assert seen[0] == str(uid) and "wrote-own" in seen
        assert not [s for s in seen if s.isupper() and "-" in s]  # nothing escaped
        kind, seen, code = report["boxed"]
        assert kind == "BoxedProcess" and code == 0
        assert seen[0] == str(uid) and "wrote-own" in seen and "IN-RUN-SANDBOX" in seen
        assert [s for s in seen if s.isupper() and "-" in s] == ["IN-RUN-SANDBOX"]
        assert int(seen[-1]) < 10  # the run's processes only
        assert report["killed"] == 9
        assert not (root / "run" / "outside").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
