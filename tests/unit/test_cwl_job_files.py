"""The files of a CWL run: what ``flowdeck cwl-runner`` attaches and how it names them,
what it writes back, and how the server locates a job's files among the attachments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowdeck.cli.cwl_files import Bundle, attachment_names, bring_back, job_for_server, relocate
from flowdeck.engines.cwl import main_file_path
from flowdeck.errors import InvalidInput
from flowdeck.services.wes_cwl import located_job


def test_a_bundle_holds_the_documents_and_files_a_tool_and_its_job_name(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "y").mkdir()
    (tmp_path / "tools" / "wf.cwl").write_text(
        "cwlVersion: v1.2\nclass: Workflow\nrequirements:\n"
        "  SchemaDefRequirement: {types: [{$import: types.yml}]}\n"
        "steps:\n  s: {run: step.cwl, in: {}, out: []}\n"
        "inputs:\n  i: {type: File, default: {class: File, location: ../data/default.txt}}\n"
        "outputs: []\n"
    )
    (tmp_path / "tools" / "step.cwl").write_text("class: CommandLineTool\n")
    (tmp_path / "tools" / "types.yml").write_text("- {name: t, type: enum, symbols: [a]}\n")
    for name in ("default.txt", "x/same.txt", "y/same.txt"):
        (tmp_path / "data" / name).write_text(name)
    bundle = Bundle()
    bundle.add_document(tmp_path / "tools" / "wf.cwl")
    base = tmp_path / "data"
    job = {
        "f": [
            {"class": "File", "location": "x/same.txt"},
            {"class": "File", "path": str(base / "y" / "same.txt")},
            {"class": "File", "location": "x/same.txt"},
        ],
        "literal": {"class": "File", "basename": "l.txt", "contents": "l"},
        "other": 1.23e5,
    }
    sent = job_for_server(job, base, bundle, bundle.root)
    root = bundle.root()
    assert root == tmp_path
    assert sorted(attachment_names(bundle, root)) == [
        "data/default.txt",
        "data/x/same.txt",
        "data/y/same.txt",
        "tools/step.cwl",
        "tools/types.yml",
        "tools/wf.cwl",
    ]
    assert relocate(sent, root) == {
        "f": [
            {"class": "File", "location": "data/x/same.txt"},
            {"class": "File", "location": "data/y/same.txt"},
            {"class": "File", "location": "data/x/same.txt"},
        ],
        "literal": {"class": "File", "basename": "l.txt", "contents": "l"},
        "other": 1.23e5,
    }


def test_outputs_are_written_back_under_outdir_with_their_listings(tmp_path: Path) -> None:
    got: list[str] = []

    def download(url: str, target: Path) -> None:
        got.append(url)
        target.write_text(url.rsplit("/", 1)[-1])

    a = {"class": "File", "basename": "a.txt", "location": "http://s/1/a.txt"}
    value = {
        "first": a,
        "again": [a],
        "d": {
            "class": "Directory",
            "basename": "d",
            "listing": [{"class": "File", "basename": "a.txt", "location": "http://s/1/a.txt"}],
        },
        "n": 3,
    }
    out = bring_back(value, tmp_path, download)
    assert got == ["http://s/1/a.txt"]
    assert (tmp_path / "d" / "a.txt").read_text() == "a.txt"
    assert out["d"]["location"] == (tmp_path / "d").as_uri()
    assert out["d"]["listing"][0]["path"] == str(tmp_path / "d" / "a.txt")
    assert out["n"] == 3
    # one file downloaded once: the same place for each mention in one folder, a copy
    # where a Directory holds it
    assert out["first"]["path"] == out["again"][0]["path"] == str(tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text() == "a.txt"


ATTACHED = {"wf.cwl", "a/same.txt", "b/same.txt", "d/one.txt"}


def located(job: dict[str, Any]) -> Any:
    return located_job(job, ATTACHED, None)


def test_a_job_keeps_everything_but_locations() -> None:
    job = {
        "files": [
            {"class": "File", "location": "./a/same.txt", "format": "edam:1", "x": [1]},
            {"class": "File", "path": "b/same.txt", "secondaryFiles": []},
            {"class": "File", "location": "file:///home/me/one.txt"},
        ],
        "dir": {"class": "Directory", "location": "d/"},
        "literal": {"class": "Directory", "basename": "l", "listing": []},
        "remote": {"class": "File", "location": "https://example.org/x"},
        "undeclared": {"any": 0.00001},
    }
    assert located(job) == {
        "files": [
            {"class": "File", "location": "a/same.txt", "format": "edam:1", "x": [1]},
            {"class": "File", "location": "b/same.txt", "secondaryFiles": []},
            {"class": "File", "location": "d/one.txt"},
        ],
        "dir": {"class": "Directory", "location": "d"},
        "literal": {"class": "Directory", "basename": "l", "listing": []},
        "remote": {"class": "File", "location": "https://example.org/x"},
        "undeclared": {"any": 0.00001},
    }


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../a/same.txt", "not a safe relative path"),
        ("a/\x1bsame.txt", "not a safe relative path"),
        ("c.txt", "not an attachment"),
        ("/srv/same.txt", "several attachments have that name"),
    ],
)
def test_a_location_outside_the_attachments_is_refused(location: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        located({"in": [{"class": "File", "location": location}]})
    assert "workflow_params.in[0]" in caught.value.message


def test_locations_are_uri_references_and_secondary_files_go_along(tmp_path: Path) -> None:
    for name in ("A:Gln2Cys.txt", "A:Gln2Cys.txt.idx", "A:Gln2Cys.bai", "other.txt"):
        (tmp_path / name).write_text(name)
    bundle = Bundle()
    sent = job_for_server(
        {"f": {"class": "File", "location": "A%3AGln2Cys.txt"}}, tmp_path, bundle, bundle.root
    )
    names = sorted(attachment_names(bundle, bundle.root()))
    assert names == ["A:Gln2Cys.bai", "A:Gln2Cys.txt", "A:Gln2Cys.txt.idx"]
    job = relocate(sent, bundle.root())
    assert job == {"f": {"class": "File", "location": "A%3AGln2Cys.txt"}}
    assert located_job(job, set(names), None) == job


def test_a_workflow_url_names_its_file_without_fragment_or_dot() -> None:
    assert main_file_path("./sub/packed.cwl#main") == "sub/packed.cwl"
    assert main_file_path("tool.cwl") == "tool.cwl"
