"""The reference WES server for bench.wes: ``wes-server`` of the ``wes-service`` package
(the GA4GH reference implementation: connexion/Flask on uvicorn, no authentication, no
database), started in its own process on a free port.

It is a dev dependency (``make dev`` installs it beside flowdeck); where it is missing, it
is installed once into the virtualenv that tests/acceptance/test_wes_client.py makes in the
cache directory.  Its RunWorkflow
(the ``cwl_runner`` backend) writes the attachments to a new temporary folder, writes the
request and job files, starts the runner with ``Popen`` (not waiting for it) and answers:
each accepted run is a runner process from then on, all of them at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import scratch_dir
from bench.server import _port
from bench.venvs import venv_program

REQUIREMENT = "wes-service>=5.0"


def wes_server() -> Path:
    """The ``wes-server`` program: the dev environment's, else the cached virtualenv's
    (installed there on first use)."""
    beside = Path(sys.executable).with_name("wes-server")
    if beside.exists():
        return beside
    # the virtualenv tests/acceptance/test_wes_client.py makes
    return venv_program("wes-client-venv", ["setuptools<81", REQUIREMENT], "wes-server", 900)


@contextmanager
def wes_service(runner: str) -> Iterator[str]:
    """The base URL of a fresh wes-server whose runs are ``runner`` (a CWL runner: it is
    given ``--no-container --quiet --outdir=… workflow job``).  On leaving, the server and
    every runner it started (one process group) are ended."""
    exe = wes_server()
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        port = _port()
        argv = [str(exe), "--port", str(port), "--opt", f"runner={runner}"]
        argv += ["--opt", "extra=--no-container", "--opt", "extra=--quiet"]
        with (Path(tmp) / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=tmp,  # its runs' folders: ./workflows/<run id>
                env={**os.environ, "TMPDIR": tmp},  # its attachments: mkdtemp()
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        httpx.get(f"{url}/ga4gh/wes/v1/runs")
                        break
                    time.sleep(0.1)
                yield url
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
