"""The `wes-client` command of the `wes-service` package (a WES client written elsewhere)
submits a CWL workflow with an attachment to flowdeck, waits, and gets its outputs.

It runs in its own virtualenv (it needs setuptools<81 for pkg_resources), made once in a
cache directory.  It sends its POST without the --auth header: requests then takes the
credentials from ~/.netrc (here $NETRC) as HTTP Basic, which flowdeck's WES routes accept
with the token as the password."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import live_server, make_settings, register_and_login

CWL = Path(__file__).parents[1] / "data" / "cwl"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowdeck-tests"


def wes_client() -> Path:
    venv = CACHE / "wes-client-venv"
    exe = venv / "bin" / "wes-client"
    if exe.exists():
        return exe
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "setuptools<81", "wes-service"],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot install wes-service with pip ({exc}); CI installs it")
    return exe


def test_wes_client_runs_a_cwl_workflow_with_an_attachment(tmp_path: Path) -> None:
    exe = wes_client()
    work = tmp_path / "client"
    work.mkdir()
    for name in ("sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt"):
        shutil.copy(CWL / name, work / name)
    (work / "job.json").write_text(json.dumps({"text": {"class": "File", "path": "fruit.txt"}}))
    with live_server(make_settings(tmp_path / "data")) as srv:
        token = register_and_login(srv, "wesclient")
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine 127.0.0.1 login wesclient password {token}\n")
        netrc.chmod(0o600)
        host = srv.url.removeprefix("http://")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "NETRC": str(netrc)}
        result = subprocess.run(
            [
                str(exe),
                f"--host={host}",
                "--proto=http",
                f"--auth=Bearer {token}",
                "--attachments=sort.cwl,count.cwl,fruit.txt",
                "sort-count.cwl",
                "job.json",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs = json.loads(result.stdout)
        with srv.client(token) as c:
            assert c.get(outputs["sorted"]["location"]).text == "apple\nfig\npear\n"
            assert c.get(outputs["count"]["location"]).text.strip() == "3"
        assert "State is COMPLETE" in result.stderr
