"""Sapporo (the ``sapporo`` package, ``sapporo>=2,<3``: a GA4GH WES server on FastAPI and
uvicorn) as a WES peer of bench.wes and bench.wes_status, in its own virtual environment
(:mod:`bench.venvs`, made on first use).

Sapporo keeps each run in a folder of its run directory (``SAPPORO_RUN_DIR``) and starts it
with its run script (``SAPPORO_RUN_SH``, by default the package's ``run.sh``: ``bash run.sh
<run folder>`` per accepted run, in a background task after the answer).  The packaged
script runs every engine in Docker; here its ``run_cwltool`` function is replaced by one
that calls the cwltool of flowdeck's environment with ``--no-container`` in the run's
``exe`` folder (where the attachments are), the rest of the script as shipped: state files,
the outputs list and the RO-Crate that ``sapporo-cli`` writes after the run.  Its
service-info (``SAPPORO_SERVICE_INFO``) names that cwltool's version; authentication is off
(``SAPPORO_AUTH_CONFIG``).  Sapporo serves its API at the root; ``SAPPORO_URL_PREFIX`` (its
``root_path``) makes the same routes answer under ``/ga4gh/wes/v1`` too, so the benchmarks
send every server the same requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import httpx

from bench.common import scratch_dir
from bench.server import _port
from bench.venvs import PeerUnavailable, venv_program

REQUIREMENT = "sapporo>=2,<3"
PREFIX = "/ga4gh/wes/v1"
# Sapporo requires the engine by name in each RunWorkflow request (WES leaves it optional).
FORM = {"workflow_engine": "cwltool"}
GRACE_S = 2  # SIGTERM to SIGKILL when a run is stopped with the server

# Replaces the packaged run_cwltool (which runs cwltool's image with docker); {cwltool} is
# flowdeck's.  The run folder's tmp/ holds cwltool's temporary files, as in the original.
RUN_CWLTOOL = """function run_cwltool() {{
    # flowdeck's bench: cwltool of flowdeck's environment, on this host, without containers
    cd "${{exe_dir}}"
    local -a cmd_arr=(env "TMPDIR=${{tmp_dir}}"
        {cwltool} --no-container --outdir "${{outputs_dir}}")
    _append_engine_params cmd_arr
    cmd_arr+=("${{wf_url}}" "${{wf_params}}")
    _write_and_run cmd_arr
}}
"""


def sapporo_program() -> Path:
    """The ``sapporo`` program of its environment (installed on first use)."""
    return venv_program("sapporo-venv", [REQUIREMENT], "sapporo")


def version() -> str:
    """The installed Sapporo's version ("?" where it cannot be told)."""
    out = subprocess.run(
        [
            str(sapporo_program().with_name("python")),
            "-c",
            "import sapporo._version as v;print(v.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def package_dir(exe: Path) -> Path:
    """The installed ``sapporo`` package's folder (its run.sh, service-info, auth config)."""
    found = sorted((exe.parent.parent / "lib").glob("python*/site-packages/sapporo/run.sh"))
    if not found:
        raise PeerUnavailable(f"no sapporo/run.sh in {exe.parent.parent}")
    return found[-1].parent


def run_script(packaged: str, cwltool: Path) -> str:
    """Sapporo's run.sh with its ``run_cwltool`` function replaced by one that runs
    ``cwltool`` without containers."""
    pattern = re.compile(r"^function run_cwltool\(\) \{\n.*?^\}\n", re.M | re.S)
    replaced, count = pattern.subn(
        lambda _m: RUN_CWLTOOL.format(cwltool=shlex.quote(str(cwltool))), packaged, count=1
    )
    if count != 1:
        raise PeerUnavailable("Sapporo's run.sh has no run_cwltool function to replace")
    return replaced


def _configure(folder: Path, exe: Path, cwltool: Path) -> dict[str, str]:
    """Write the run script, service-info and auth config into ``folder``: the settings
    (environment variables) that make Sapporo use them."""
    pkg = package_dir(exe)
    script = folder / "run.sh"
    script.write_text(run_script((pkg / "run.sh").read_text(), cwltool))
    info = json.loads((pkg / "service_info.json").read_text())
    with contextlib.suppress(metadata.PackageNotFoundError):
        engine = {"workflow_engine_version": [metadata.version("cwltool")]}
        info.setdefault("workflow_engine_versions", {})["cwltool"] = engine
    (folder / "service_info.json").write_text(json.dumps(info, indent=2))
    auth = json.loads((pkg / "auth_config.json").read_text())
    auth["auth_enabled"] = False
    (folder / "auth_config.json").write_text(json.dumps(auth, indent=2))
    (folder / "runs").mkdir()  # (its database is made in it, the folder is not)
    return {
        "SAPPORO_RUN_DIR": str(folder / "runs"),
        "SAPPORO_RUN_SH": str(script),
        "SAPPORO_SERVICE_INFO": str(folder / "service_info.json"),
        "SAPPORO_AUTH_CONFIG": str(folder / "auth_config.json"),
        "SAPPORO_URL_PREFIX": PREFIX,
        "SAPPORO_CANCEL_GRACE_SECONDS": str(GRACE_S),
    }


@contextmanager
def sapporo_service(cwltool: Path | None = None) -> Iterator[str]:
    """The base URL of a fresh Sapporo on a free port whose CWL runs are ``cwltool``
    (default: flowdeck's) without containers.  Raises :class:`PeerUnavailable` when it
    cannot be installed or started.  On leaving, the server is stopped (its process group:
    each run's run.sh stops its engine on SIGTERM), then whatever is left is killed."""
    exe = sapporo_program()
    cwltool = cwltool or Path(sys.executable).with_name("cwltool")
    if not cwltool.exists():
        raise PeerUnavailable(f"no cwltool at {cwltool}")
    if shutil.which("jq") is None:  # run.sh reads each run request with jq
        raise PeerUnavailable("Sapporo's run.sh needs jq, which is not on PATH")
    with tempfile.TemporaryDirectory(dir=scratch_dir(), ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        port = _port()
        env = {
            **os.environ,
            **_configure(folder, exe, cwltool),
            "SAPPORO_HOST": "127.0.0.1",
            "SAPPORO_PORT": str(port),
            # run.sh calls sapporo-cli (outputs list, RO-Crate) by name
            "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "TMPDIR": tmp,
        }
        url = f"http://127.0.0.1:{port}"
        with (folder / "server.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(exe)],
                cwd=tmp,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                _wait_until_up(url, proc, folder / "server.log")
                yield url
            finally:
                _stop(proc)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}{PREFIX}/service-info", timeout=5).status_code == 200:
                return
        if proc.poll() is not None:
            tail = " / ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
            raise PeerUnavailable(f"sapporo ended (exit {proc.returncode}): {tail}")
        time.sleep(0.1)
    raise PeerUnavailable(f"sapporo's service-info did not answer within 120 s ({log})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's group (the server and each run.sh; a run.sh stops its run's
    own group on it), then SIGKILL to what is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        proc.poll()  # reap the server itself, so that the group can empty
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
