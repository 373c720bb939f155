"""The `wes-client` command of the `wes-service` package (a WES client written elsewhere)
submits a CWL workflow with an attachment to flowdeck, waits, and gets its outputs.

It runs in its own virtualenv (it needs setuptools<81 for pkg_resources), made once in a
cache directory.  It sends its POST without the --auth header: requests then takes the
credentials from ~/.netrc (here $NETRC) as HTTP Basic, which flowdeck's WES routes accept
with the token as the password.  With only that .netrc entry (no --auth), the same client
also reads the run's log (--log, and the log it prints after a run) and, through the URLs
of its run log (--get), the step's stdout and the output files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FLOWDECK_CODE, live_server, make_settings, register_and_login

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


def netrc_get(exe: Path, url: str, env: dict[str, str]) -> tuple[int, str]:
    """GET ``url`` with wes-client's own HTTP library (requests, in its virtualenv) as
    wes-client itself reads run logs: no header, so the credentials come from $NETRC."""
    code = "import sys, requests; r = requests.get(sys.argv[1]); print(r.status_code); "
    code += "sys.stdout.write(r.text)"
    done = subprocess.run(
        [str(exe.parent / "python"), "-c", code, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def test_wes_client_runs_a_cwl_workflow_with_an_attachment(tmp_path: Path) -> None:
    exe = wes_client()
    work = tmp_path / "client"
    work.mkdir()
    for name in ("sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt"):
        shutil.copy(CWL / name, work / name)
    (work / "job.json").write_text(json.dumps({"text": {"class": "File", "path": "fruit.txt"}}))
    with live_server(make_settings(tmp_path / "data", **FLOWDECK_CODE)) as srv:
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
        found = re.search(r"Workflow run id is (\S+)", result.stderr)
        assert found is not None, result.stderr[-3000:]
        run_id = found.group(1)
        # after the run, wes-client fetched run_log.stderr (.netrc's Basic auth) and logged it
        assert "completed success" in result.stderr.partition("Run log:")[2]

        def wes(*args: str) -> str:  # wes-client with only the .netrc entry: no --auth
            done = subprocess.run(
                [str(exe), f"--host={host}", "--proto=http", *args],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        stderr_log = wes(f"--log={run_id}")
        assert "[job sort]" in stderr_log and "completed success" in stderr_log
        run_log = json.loads(wes(f"--get={run_id}"))
        assert run_log["state"] == "COMPLETE"
        under = f"{srv.url}/ga4gh/wes/v1/runs/{run_id}/"
        sorted_url = run_log["outputs"]["sorted"]["location"]
        count_url = run_log["outputs"]["count"]["location"]
        for url in (run_log["run_log"]["stdout"], run_log["run_log"]["stderr"], sorted_url):
            assert url.startswith(under), url
        assert netrc_get(exe, sorted_url, env) == (200, "apple\nfig\npear\n")
        status, count = netrc_get(exe, count_url, env)
        assert (status, count.strip()) == (200, "3")
        api = f"/api/v1/runs/{run_id}/steps/cwl/logs"
        with srv.client(token) as c:  # the same logs through flowdeck's own API
            logs = {s: c.get(api, params={"stream": s}).text for s in ("stdout", "stderr")}
        assert logs["stderr"] == stderr_log
        for stream, text in logs.items():
            assert netrc_get(exe, run_log["run_log"][stream], env) == (200, text)
