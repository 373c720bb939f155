"""CWL inputs and outputs as a flowdeck spec."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from flowdeck.domain.validation import validate_text
from flowdeck.engines.cwl import ENGINE_INPUT, SHIM_FILE, is_cwl, main_process, translate
from flowdeck.errors import CwlUnsupported, InvalidInput


def tool(inputs: Any, outputs: Any = None) -> dict[str, Any]:
    return {
        "cwlVersion": "v1.2",
        "class": "CommandLineTool",
        "baseCommand": "true",
        "inputs": inputs,
        "outputs": outputs or [],
    }


def test_cwl_types_become_flowdeck_input_types() -> None:
    spec = translate(
        tool(
            {
                "reads": "File",
                "more": "File[]?",
                "count": {"type": "long", "default": 3},
                "ratio": "double?",
                "flag": "boolean",
                "mode": {"type": {"type": "enum", "symbols": ["fast", "slow"]}},
                "names": {"type": {"type": "array", "items": "string"}},
                "out-dir": ["null", "Directory"],
            },
            {"result": {"type": "stdout"}, "n": {"type": "int"}},
        ),
        "tool.cwl",
        "t",
        "1",
    )
    inputs = spec["inputs"]
    assert inputs["reads"] == {"type": "file"}
    assert inputs["more"] == {"type": "array", "items": "file", "required": False}
    assert inputs["count"] == {"type": "int", "default": 3}
    assert inputs["ratio"] == {"type": "float", "required": False}
    assert inputs["flag"] == {"type": "bool"}
    assert inputs["mode"] == {"type": "enum", "symbols": ["fast", "slow"]}
    assert inputs["names"] == {"type": "array", "items": "string"}
    assert inputs["out_dir"] == {"type": "directory", "required": False}
    assert ENGINE_INPUT in inputs
    step = spec["steps"]["cwl"]
    assert step["with"]["inputs"]["out-dir"] == "${{ inputs.out_dir }}"
    assert step["with"]["file_inputs"] == {"reads": "File", "more": "File", "out-dir": "Directory"}
    # every CWL output is an output: Files as files (products), values by their types
    assert set(spec["outputs"]) == {"cwl_output", "result", "n"}
    assert step["outputs"]["result"] | {"description": ""} == {
        "glob": "outputs/result/*/*",
        "type": "file",
        "description": "",
    }
    assert step["outputs"]["n"] | {"description": ""} == {
        "return": "n",
        "type": "int",
        "description": "",
    }
    report = validate_text(json.dumps(spec), [SHIM_FILE, "tool.cwl"])
    assert report.ok, report.problems
    assert is_cwl(report.require().spec)


@pytest.mark.parametrize(
    "cwl_type",
    [
        {"type": "record", "fields": []},
        ["string", "int"],
        {"type": "array", "items": {"type": "array", "items": "string"}},
        "Any",
        "#Sample",
    ],
)
def test_other_types_are_given_in_the_job_document(cwl_type: Any) -> None:
    spec = translate(
        tool({"odd": {"type": cwl_type}, "opt": ["null", cwl_type]}), "t.cwl", "t", "1"
    )
    assert "odd" not in spec["inputs"] and "opt" not in spec["inputs"]
    job_only = spec["steps"]["cwl"]["with"]["job_only"]
    assert job_only["odd"]["required"] is True
    assert job_only["opt"]["required"] is False
    assert {"cwl_job", "cwl_files"} <= set(spec["inputs"])


def test_output_ports_map_to_flowdeck_types() -> None:
    spec = translate(
        tool(
            [],
            {
                "one": "File",
                "many": "File[]",
                "maybe": "File?",
                "words": "string[]",
                "rec": {"type": {"type": "record", "fields": {"f": "File"}}},
                "dir": "Directory",
                "object": "string",  # an output may have any name a port may have
            },
        ),
        "t.cwl",
        "t",
        "1",
    )
    outs = spec["steps"]["cwl"]["outputs"]
    assert (outs["one"]["type"], outs["maybe"]["type"]) == ("file", "file")
    assert (outs["many"]["type"], outs["many"]["items"]) == ("array", "file")
    assert (outs["words"]["type"], outs["words"]["items"]) == ("array", "string")
    assert "type" not in outs["rec"] and outs["rec"]["return"] == "rec"
    assert "type" not in outs["dir"]
    assert outs["object"] == {
        "return": "object",
        "type": "string",
        "description": "CWL output object",
    }
    assert spec["steps"]["cwl"]["with"]["file_ports"] == {
        "one": "file",
        "many": "files",
        "maybe": "file",
    }
    report = validate_text(json.dumps(spec), [SHIM_FILE, "t.cwl"])
    assert report.ok, report.problems


def test_documents_without_cwl_version_or_a_known_version_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not a CWL document"):
        main_process({"class": "Workflow"}, "x.cwl")
    with pytest.raises(CwlUnsupported, match=r"v0\.9"):
        main_process({"cwlVersion": "v0.9"}, "x.cwl")
    packed = {"cwlVersion": "v1.2", "$graph": [{"id": "#main", "class": "Workflow"}]}
    assert main_process(packed, "x.cwl")["class"] == "Workflow"


def test_the_server_does_not_import_cwltool() -> None:
    code = (
        "import sys; from pathlib import Path; from flowdeck.api import create_app; "
        "from flowdeck.config import load_settings; "
        "from flowdeck.services.context import make_context; "
        "from flowdeck.store.fake import FakeStore; "
        "cfg = load_settings(None, data_dir=Path('unused')); "
        "create_app(cfg, make_context(cfg, FakeStore()), run_scheduler=False); "
        "import flowdeck.services.wes, flowdeck.api.routes.wes; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cwltool', 'schema_salad')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_network_access_makes_the_step_ask_for_network() -> None:
    """CWL's NetworkAccess maps to resources.network (allowed by step_network)."""
    plain = translate(tool({}), "tool.cwl", "t", "1")
    assert "resources" not in plain["steps"]["cwl"]
    wants = {**tool({}), "requirements": [{"class": "NetworkAccess", "networkAccess": True}]}
    spec = translate(wants, "tool.cwl", "t", "1")
    assert spec["steps"]["cwl"]["resources"] == {"network": True}
    validate_text(json.dumps(spec))
    hinted_off = {**tool({}), "hints": {"NetworkAccess": {"networkAccess": False}}}
    assert "resources" not in translate(hinted_off, "tool.cwl", "t", "1")["steps"]["cwl"]
    hinted_on = {**tool({}), "hints": {"NetworkAccess": {"networkAccess": True}}}
    assert translate(hinted_on, "tool.cwl", "t", "1")["steps"]["cwl"]["resources"]["network"]


def test_float_defaults_in_exponent_notation_are_numbers() -> None:
    document = main_process(
        yaml.safe_load(
            "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 'true'\noutputs: []\n"
            "inputs:\n  small: {type: float, default: 0.00001}\n"
            "  big: {type: double, default: 1.23e5}\n  tiny: {type: float, default: 1e-5}\n"
        ),
        "t.cwl",
    )
    inputs = translate(document, "t.cwl", "t", "1")["inputs"]
    assert [inputs[n]["default"] for n in ("small", "big", "tiny")] == [1e-05, 123000.0, 1e-05]
    report = validate_text(json.dumps(translate(document, "t.cwl", "t", "1")), ["t.cwl", SHIM_FILE])
    assert report.ok, report.problems
