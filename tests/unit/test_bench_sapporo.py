"""bench.sapporo's run script: Sapporo's run.sh with only its ``run_cwltool`` function
replaced (cwltool of flowdeck's environment, without containers); a run.sh without that
function makes Sapporo unavailable, not a broken script.  And bench.rawhttp's requests to
a server without authentication carry no Authorization header."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import rawhttp
from bench.sapporo import run_script
from bench.venvs import PeerUnavailable

PACKAGED = """#!/usr/bin/env bash
function run_wf() {
    "run_${wf_engine}"
}

function run_cwltool() {
    local -a cmd_arr=(docker run --rm "${container}" --outdir "${outputs_dir}")
    cmd_arr+=("${wf_url}" "${wf_params}")
    _write_and_run cmd_arr
}

function run_nextflow() {
    local -a cmd_arr=(docker run --rm nextflow)
    _write_and_run cmd_arr
}
"""


def test_only_run_cwltool_is_replaced() -> None:
    script = run_script(PACKAGED, Path("/opt/my env/bin/cwltool"))
    cwltool = script[script.index("function run_cwltool") : script.index("function run_nextflow")]
    assert "docker" not in cwltool
    assert "'/opt/my env/bin/cwltool' --no-container" in cwltool  # quoted for the shell
    assert 'cd "${exe_dir}"' in cwltool  # the attachments and the relative workflow_url
    assert script.startswith('#!/usr/bin/env bash\nfunction run_wf() {\n    "run_${wf_engine}"\n}')
    assert script.endswith(
        "function run_nextflow() {\n    local -a cmd_arr=(docker run --rm nextflow)\n"
        "    _write_and_run cmd_arr\n}\n"
    )


def test_a_run_sh_without_run_cwltool_is_unavailable() -> None:
    with pytest.raises(PeerUnavailable, match="run_cwltool"):
        run_script(PACKAGED.replace("run_cwltool", "run_other"), Path("/usr/bin/cwltool"))


def test_no_authorization_header_without_a_token() -> None:
    assert b"Authorization" not in rawhttp.request("http://127.0.0.1:1", "", "GET", "/x")
    with_token = rawhttp.request("http://127.0.0.1:1", "tok", "GET", "/x")
    assert b"\r\nAuthorization: Bearer tok\r\n" in with_token
