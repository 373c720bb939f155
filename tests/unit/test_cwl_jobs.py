"""The checks of CWL job documents given to stored CWL workflows, and their display."""

from __future__ import annotations

import json

import pytest

from flowdeck.domain.spec import WorkflowSpec
from flowdeck.engines.cwl import translate
from flowdeck.errors import InvalidInput
from flowdeck.services.cwl_jobs import (
    job_params,
    relative_path_problem,
    staged_names,
    start_problems,
)
from flowdeck.web.cwl_job import job_lines

TOOL = {
    "cwlVersion": "v1.2",
    "class": "CommandLineTool",
    "baseCommand": "true",
    "inputs": {"pair": {"type": {"type": "record", "fields": {"f": "File"}}}, "n": "int?"},
    "outputs": {},
}
SPEC = WorkflowSpec.model_validate(translate(TOOL, "t.cwl", "t", "1"))


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("data/a.txt", None),
        ("a b/ü.txt", None),
        ("../a", "'..'"),
        ("a/./b", "'.'"),
        ("/etc/passwd", "absolute"),
        ("a\\b", "'\\'"),
        ("a\nb", "control character"),
        ("a\u202eb", "bidirectional"),
        ("a" * 256, "too long"),
    ],
)
def test_staging_keys(name: str, problem: str | None) -> None:
    found = relative_path_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_job_is_kept_as_sent_and_checked() -> None:
    job = {"pair": {"f": {"class": "File", "location": "d/f.txt", "format": "edam:x"}}}
    params = job_params(SPEC, {"cwl_job": job}, None)
    assert json.loads(params["cwl_job"]) == job == json.loads(params["cwl_request"])
    with pytest.raises(InvalidInput) as err:
        job_params(SPEC, {"cwl_job": {"pair": {"f": {"class": "File", "path": "a/../../x"}}}}, None)
    assert "cwl_job.pair.f.path" in err.value.message


def test_start_names_what_is_missing() -> None:
    staged = staged_names(["/d/runs/r/inputs/cwl_files/d/f.txt"])
    assert staged == {"d/f.txt": "/d/runs/r/inputs/cwl_files/d/f.txt"}
    job = json.dumps({"pair": {"f": {"class": "File", "location": "d/g.txt"}}})
    problems = start_problems(SPEC, {"cwl_job": job}, {"cwl_files": list(staged.values())})
    assert [p["message"].split(":")[0] for p in problems] == ["cwl_job.pair.f.location"]
    assert start_problems(SPEC, {}, {})[0]["message"].startswith("CWL input 'pair' (")
    both = start_problems(SPEC, {"cwl_job": "{}", "n": 1}, {})
    assert "not both (typed: n)" in both[0]["message"]


def test_the_dashboard_links_staged_locations() -> None:
    job = {"a": {"class": "File", "location": "d/f.txt"}, "b": {"class": "File", "path": "x"}}
    files = [{"input": "cwl_files", "filename": "d/f.txt", "url": "/u"}]
    lines = job_lines(job, files)
    linked = [line for line in lines if "url" in line]
    assert linked == [{"text": '    "location": "', "link": "d/f.txt", "url": "/u", "after": '"'}]
    assert "\n".join(line["text"] for line in lines if "url" not in line).count('"x"') == 1
